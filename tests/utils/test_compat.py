"""Tests of cmt_mm.utils.compat: environment checks and in-process fixes.

Cases that change process-wide state irreversibly (imports, process groups) or must show
a failure without the fix run in subprocesses.
"""
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from cmt_mm.utils import compat

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_python(code: str, env_extra=None, timeout=120):
    env = dict(os.environ, **(env_extra or {}))
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (env_extra or {}).get('PYTHONPATH', '').split(os.pathsep) + [REPO] if p)
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


# --------------------------------------------------------------------------------------
# mmcv
# --------------------------------------------------------------------------------------


def no_ext(name):
    if name == 'mmcv._ext':
        raise ModuleNotFoundError("No module named 'mmcv._ext'", name='mmcv._ext')
    raise AssertionError(name)


def test_mmcv_without_ops_message():
    with pytest.raises(compat.EnvironmentProblem) as info:
        compat.check_mmcv_ops(mmcv_version='2.1.0', import_module=no_ext)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for part in ('mmcv 2.1.0 was built without its compiled ops', 'mmcv._ext',
                 'bash tools/setup_env.sh', 'MMCV_WITH_OPS=1', '--no-build-isolation',
                 'CMT_MM_WHEELHOUSE'):
        assert part in msg, msg


def test_mmcv_without_ops_via_monkeypatch(monkeypatch, restore_loading_state):
    from mmengine.dist import utils as dist_utils
    mmcv = pytest.importorskip('mmcv')
    # setup_environment() wraps this; restored after the test.
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch', dist_utils._init_dist_pytorch)
    monkeypatch.setattr(mmcv, '__version__', '2.1.0')
    monkeypatch.setitem(sys.modules, 'mmcv._ext', None)  # makes the import fail
    with pytest.raises(compat.EnvironmentProblem, match='built without its compiled ops'):
        compat.check_mmcv_ops()
    with pytest.raises(compat.EnvironmentProblem):
        compat.setup_environment(detection=True)
    compat.setup_environment(detection=False)  # classification does not need the ops


@pytest.mark.parametrize('version', ['2.2.0', '2.3.1', '1.7.2', '2.0.0rc3'])
def test_mmcv_version_refused_by_mmdet(version, monkeypatch):
    mmcv = pytest.importorskip('mmcv')
    monkeypatch.setattr(mmcv, '__version__', version)
    with pytest.raises(compat.EnvironmentProblem) as info:
        compat.check_mmcv_ops()
    msg = str(info.value)
    assert f'mmcv {version} is installed' in msg and 'Install mmcv 2.1.0' in msg, msg
    assert 'mmcv>=2.0.0rc4,<2.2.0' in msg


def test_mmcv_ops_that_do_not_load():
    def broken(name):
        raise ImportError('_ext.so: undefined symbol: _ZN3c104cuda')

    with pytest.raises(compat.EnvironmentProblem, match='different torch or Python'):
        compat.check_mmcv_ops(mmcv_version='2.1.0', import_module=broken)


def test_mmcv_not_installed():
    def missing(name):
        raise ModuleNotFoundError(f"No module named '{name}'", name=name)

    with pytest.raises(compat.EnvironmentProblem, match='mmcv is not installed'):
        compat.check_mmcv_ops(import_module=missing)


def test_mmcv_accepted_versions():
    ok = lambda name: None  # noqa: E731
    for version in ('2.0.0rc4', '2.0.1', '2.1.0'):
        assert compat.check_mmcv_ops(mmcv_version=version, import_module=ok) == version


def test_installed_mmcv_passes():
    pytest.importorskip('mmcv._ext', reason='mmcv without compiled ops installed')
    assert compat.check_mmcv_ops() == '2.1.0'


# --------------------------------------------------------------------------------------
# mmengine checkpoints under torch >= 2.6 (weights_only=True by default)
# --------------------------------------------------------------------------------------

needs_weights_only_default = pytest.mark.skipif(
    not hasattr(torch.serialization, 'add_safe_globals'),
    reason='torch < 2.4 has no weights-only allow-list')


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """An epoch checkpoint written by a real mmengine Runner (tiny model, one iteration)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class TinyModel(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, inputs, labels=None, mode='tensor'):
            out = self.fc(inputs)
            if mode == 'loss':
                return dict(loss=((out - labels)**2).mean())
            return out

    data = [dict(inputs=torch.full((2, ), float(i)), labels=torch.ones(1)) for i in range(4)]
    work_dir = str(tmp_path_factory.mktemp('runner'))
    runner = Runner(
        model=TinyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=data, batch_size=4, collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        experiment_name=f'compat_{os.getpid()}')
    runner.train()
    return osp.join(work_dir, 'epoch_1.pth')


@pytest.fixture
def restore_loading_state():
    """Undo allow_mmengine_checkpoints() so other tests see the stock behaviour."""
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = dict(CheckpointLoader._schemes)
    safe = torch.serialization.get_safe_globals()
    yield
    CheckpointLoader._schemes.clear()
    CheckpointLoader._schemes.update(schemes)
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(safe)


LOAD = """
import sys
from mmengine.runner.checkpoint import CheckpointLoader
ckpt = CheckpointLoader.load_checkpoint(sys.argv[1], map_location='cpu')
print('loaded', sorted(ckpt))
"""


@needs_weights_only_default
def test_runner_checkpoint_fails_without_allow_list(runner_checkpoint):
    env = dict(os.environ)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    proc = subprocess.run([sys.executable, '-c', LOAD, runner_checkpoint], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout
    assert 'UnpicklingError' in proc.stderr
    assert 'HistoryBuffer' in proc.stderr or 'numpy' in proc.stderr, proc.stderr[-2000:]


@needs_weights_only_default
def test_runner_checkpoint_loads_with_allow_list(runner_checkpoint, restore_loading_state):
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    compat.allow_mmengine_checkpoints()
    ckpt = CheckpointLoader.load_checkpoint(runner_checkpoint, map_location='cpu')
    assert {'meta', 'state_dict', 'optimizer', 'message_hub'} <= set(ckpt)
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() >= 0
    assert buffer.statistics('mean') >= 0  # the pickled statistics methods work
    # The plain torch.load that mmengine calls still runs weights-only.
    torch.load(runner_checkpoint, map_location='cpu', weights_only=True)


@needs_weights_only_default
def test_allow_list_is_idempotent(restore_loading_state):
    from mmengine.runner.checkpoint import CheckpointLoader

    compat.allow_mmengine_checkpoints()
    safe = set(map(repr, torch.serialization.get_safe_globals()))
    loaders = dict(CheckpointLoader._schemes)
    compat.allow_mmengine_checkpoints()
    assert set(map(repr, torch.serialization.get_safe_globals())) == safe
    assert dict(CheckpointLoader._schemes) == loaders
    assert loaders[''].__name__ == 'load_from_local'  # mmengine logs this name
    assert getattr not in torch.serialization.get_safe_globals()  # only a narrowed getattr


class RunsCommand:

    def __reduce__(self):
        return (os.system, ('echo this should never run',))


class ReadsAttribute:

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


@needs_weights_only_default
@pytest.mark.parametrize('payload, culprit', [
    (RunsCommand(), 'system'),
    (ReadsAttribute(), "getattr(<class 'numpy.ndarray'>, 'tofile')"),
])
def test_disallowed_global_still_refused(payload, culprit, tmp_path, restore_loading_state):
    from mmengine.runner.checkpoint import CheckpointLoader

    path = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {}, 'meta': payload}, path)
    compat.allow_mmengine_checkpoints()
    with pytest.raises(compat.UntrustedCheckpointError) as info:
        CheckpointLoader.load_checkpoint(path)
    msg = str(info.value)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert culprit in msg and 'not a trusted mmengine checkpoint' in msg, msg
    assert path in msg and '\n' not in msg


@needs_weights_only_default
def test_numpy_values_of_common_dtypes_load(tmp_path, restore_loading_state):
    from mmengine.runner.checkpoint import CheckpointLoader

    values = {'f32': np.float32(1.5), 'i64': np.int64(3), 'u8': np.uint8(7),
              'b': np.bool_(True), 'arr': np.arange(4, dtype=np.int32)}
    path = str(tmp_path / 'numpy.pth')
    torch.save({'meta': values}, path)
    compat.allow_mmengine_checkpoints()
    loaded = CheckpointLoader.load_checkpoint(path)['meta']
    assert loaded['f32'] == 1.5 and loaded['i64'] == 3 and loaded['arr'].dtype == np.int32
    torch.save({'meta': np.array([None], dtype=object)}, path)
    with pytest.raises(compat.UntrustedCheckpointError, match='ObjectDType'):
        CheckpointLoader.load_checkpoint(path)  # object arrays stay refused


# --------------------------------------------------------------------------------------
# mmpretrain + transformers >= 5
# --------------------------------------------------------------------------------------


def fake_transformers(root, version: str) -> str:
    """A stand-in ``transformers`` package (with dist metadata) lacking its real API."""
    pkg = root / 'transformers'
    pkg.mkdir()
    (pkg / '__init__.py').write_text(f"__version__ = '{version}'\n")
    info = root / f'transformers-{version}.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text(
        f'Metadata-Version: 2.1\nName: transformers\nVersion: {version}\n')
    return str(root)


IMPORT_MMPRETRAIN = """
import mmpretrain.models, mmpretrain.datasets
from mmpretrain.registry import MODELS
print('imported', MODELS.get('ResNet').__name__)
"""


@pytest.fixture(scope='module')
def transformers5(tmp_path_factory):
    pytest.importorskip('mmpretrain')
    pytest.importorskip('pycocotools')  # mmpretrain enables multimodal only with it
    return fake_transformers(tmp_path_factory.mktemp('tf5'), '5.0.0')


def test_transformers5_breaks_mmpretrain_without_fix(transformers5):
    proc = run_python(IMPORT_MMPRETRAIN, dict(PYTHONPATH=transformers5))
    assert proc.returncode != 0 and "from 'transformers'" in proc.stderr, proc.stderr[-2000:]


def test_transformers5_multimodal_switched_off(transformers5):
    code = """
    from cmt_mm.utils.compat import disable_mmpretrain_multimodal_if_broken
    assert disable_mmpretrain_multimodal_if_broken() is True
    assert disable_mmpretrain_multimodal_if_broken() is False  # already off
    """
    code = textwrap.dedent(code) + IMPORT_MMPRETRAIN
    proc = run_python(code, dict(PYTHONPATH=transformers5))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'imported ResNet' in proc.stdout
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines()
                if 'transformers 5.0.0' in line]
    assert len(warnings) == 1 and 'WARNING' in warnings[0], proc.stderr


def test_transformers4_left_alone(tmp_path):
    pytest.importorskip('mmpretrain')
    code = """
    from cmt_mm.utils.compat import disable_mmpretrain_multimodal_if_broken
    assert disable_mmpretrain_multimodal_if_broken() is False
    import sys
    assert 'mmpretrain' not in sys.modules  # nothing imported for nothing
    """
    proc = run_python(code, dict(PYTHONPATH=fake_transformers(tmp_path, '4.40.0')))
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------------------------
# CPU-only distributed initialisation
# --------------------------------------------------------------------------------------

INIT_DIST = """
import os, sys
os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                  MASTER_PORT=sys.argv[1])
from mmengine.dist import get_world_size, init_dist
if sys.argv[2] == 'fixed':
    from cmt_mm.utils.compat import EnvironmentProblem, setup_environment
    setup_environment()
    try:
        init_dist('pytorch', backend='nccl')
    except EnvironmentProblem as err:
        print('nccl refused:', err)
init_dist('pytorch', backend='gloo')
print('world size', get_world_size())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the machine without a GPU')
def test_cpu_distributed_init():
    stock = subprocess.run([sys.executable, '-c', INIT_DIST, str(free_port()), 'stock'],
                           capture_output=True, text=True, timeout=120)
    assert stock.returncode != 0  # mmengine calls torch.cuda.set_device unconditionally

    fixed = subprocess.run([sys.executable, '-c', INIT_DIST, str(free_port()), 'fixed'],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert 'world size 1' in fixed.stdout
    assert 'nccl refused: distributed backend nccl needs GPUs' in fixed.stdout
