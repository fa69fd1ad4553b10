"""End-to-end tests of tools/train.py, tools/test.py and the launch scripts.

The tools run as subprocesses, as users run them, on a tiny mmpretrain classifier
(a ResNet-18 with 8 stem/base channels) and 16 generated 32x32 images in two classes.
"""
import os
import os.path as osp
import pickle
import re
import shutil
import socket
import subprocess
import sys

import pytest

from tiny_data import write_two_class_images
from tool_modules import load_tool

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
TIMEOUT = 300

CONFIG = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor', num_classes=2, mean=[127.5] * 3, std=[127.5] * 3,
        to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                  out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))

pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset = dict(type='CustomDataset', data_root={data_root!r}, pipeline=pipeline)
train_dataloader = dict(
    batch_size=4, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4, num_workers=0, dataset=dataset,
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
auto_scale_lr = dict(base_batch_size=4)
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
"""


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """A tiny classification config plus its 16-image, two-class dataset."""
    root = tmp_path_factory.mktemp('tools')
    path = root / 'tiny_cls.py'
    path.write_text(CONFIG.format(data_root=str(write_two_class_images(root))))
    return str(path)


def torch_cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def run(args, cwd, timeout=TIMEOUT, env=None):
    proc = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return proc


def accuracy(log: str) -> float:
    """The last top-1 accuracy an mmengine log reports."""
    found = re.findall(r'accuracy/top1: ([\d.]+)', log)
    assert found, log[-3000:]
    return float(found[-1])


def assert_ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture(scope='module')
def trained(config, tmp_path_factory):
    """One epoch of training (with validation); returns (work_dir, val accuracy)."""
    work_dir = str(tmp_path_factory.mktemp('work'))
    proc = run([TRAIN, config, '--work-dir', work_dir, '--auto-scale-lr'], cwd=work_dir)
    assert_ok(proc)
    return work_dir, accuracy(proc.stdout + proc.stderr)


def test_train_writes_checkpoint_and_validates(trained):
    work_dir, acc = trained
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert 0 <= acc <= 100


def test_test_reproduces_val_accuracy(trained, config, tmp_path):
    work_dir, val_acc = trained
    out = tmp_path / 'preds.pkl'
    proc = run([TEST, config, osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
                str(tmp_path), '--out', str(out), '--show-dir', 'vis'], cwd=str(tmp_path))
    assert_ok(proc)
    assert accuracy(proc.stdout + proc.stderr) == pytest.approx(val_acc)
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 16 and 'pred_label' in preds[0]
    drawn = [f for _, _, files in os.walk(tmp_path) for f in files if f.endswith('.png')]
    assert len(drawn) == 16, drawn


def test_resume_continues_to_second_epoch(trained, config, tmp_path):
    work_dir, _ = trained
    resumed = str(tmp_path / 'resumed')
    shutil.copytree(work_dir, resumed)
    # --resume (auto) reads last_checkpoint, which names the original work dir's file.
    (tmp_path / 'resumed' / 'last_checkpoint').write_text(osp.join(resumed, 'epoch_1.pth'))
    proc = run([TRAIN, config, '--work-dir', resumed, '--resume',
                '--cfg-options', 'train_cfg.max_epochs=2'], cwd=str(tmp_path))
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    assert f'Auto resumed from the latest checkpoint {resumed}' in log, log[-3000:]
    assert 'Epoch(train) [2]' in log and 'Epoch(train) [1]' not in log
    assert osp.isfile(osp.join(resumed, 'epoch_2.pth'))


@pytest.fixture
def train_module(monkeypatch):
    """tools/train.py imported in-process for its helpers."""
    monkeypatch.delenv('LOCAL_RANK', raising=False)  # parse_args sets it; restored after
    return load_tool('tools/train.py')


def test_work_dir_defaults_to_config_name(config, train_module):
    from mmengine.config import Config
    train = train_module

    cfg = Config.fromfile(config, import_custom_modules=False)
    train.apply_common_args(cfg, train.parse_args([config]), config)
    assert cfg.work_dir == osp.join('.', 'work_dirs', 'tiny_cls')
    assert cfg.launcher == 'none' and 'model_wrapper_cfg' not in cfg

    cfg.work_dir = 'from_config'
    train.apply_common_args(cfg, train.parse_args([config]), config)
    assert cfg.work_dir == 'from_config'
    train.apply_common_args(cfg, train.parse_args([config, '--work-dir', 'cli']), config)
    assert cfg.work_dir == 'cli'


def test_compile_flag_adds_the_compile_hook(config, train_module):
    from mmengine.config import Config
    train = train_module

    cfg = Config.fromfile(config, import_custom_modules=False)
    train.apply_common_args(cfg, train.parse_args([config]), config)
    assert 'custom_hooks' not in cfg
    for flag, mode in ((['--compile'], 'default'),
                       (['--compile', 'max-autotune'], 'max-autotune')):
        cfg = Config.fromfile(config, import_custom_modules=False)
        cfg.custom_hooks = [dict(type='EMAHook')]
        train.apply_common_args(cfg, train.parse_args([config, *flag]), config)
        assert cfg.custom_hooks == [dict(type='EMAHook'),
                                    dict(type='cmt_mm.CompileHook', mode=mode)]
    cfg = Config.fromfile(config, import_custom_modules=False)
    cfg.compile_options = dict(regional=True)
    train.apply_common_args(cfg, train.parse_args([config, '--compile']), config)
    assert cfg.custom_hooks == [dict(type='cmt_mm.CompileHook', regional=True, mode='default')]


@pytest.mark.skipif(torch_cuda_available(), reason='checks the machine without a GPU')
def test_pytorch_launcher_without_gpu_uses_gloo(config, train_module):
    from mmengine.config import Config
    train = train_module

    cfg = Config.fromfile(config, import_custom_modules=False)
    args = train.parse_args([config, '--launcher', 'pytorch', '--local-rank', '1'])
    train.apply_common_args(cfg, args, config)
    assert cfg.launcher == 'pytorch' and args.local_rank == 1
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='MMDistributedDataParallel', device_ids=None)


def assert_user_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if 'error:' in line]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize('tool', [TRAIN, TEST])
def test_missing_config(tool, tmp_path):
    args = [tool, str(tmp_path / 'nope.py')] + (['x.pth'] if tool == TEST else [])
    assert_user_error(run(args, cwd=str(tmp_path), timeout=120),
                      'config file not found', 'nope.py')


def test_unknown_cfg_option(config, tmp_path):
    proc = run([TRAIN, config, '--cfg-options', 'optim_wrapper.optimizer.lrr=0.1'],
               cwd=str(tmp_path), timeout=120)
    assert_user_error(proc, "'optim_wrapper.optimizer.lrr'", "did you mean 'lr'")
    assert not (tmp_path / 'work_dirs').exists()


def test_missing_checkpoint(config, tmp_path):
    proc = run([TEST, config, str(tmp_path / 'missing.pth')], cwd=str(tmp_path),
               timeout=120)
    assert_user_error(proc, 'checkpoint file not found', 'missing.pth')


def test_detection_config_without_mmcv_ops(tmp_path):
    """An mmdet config on an mmcv without compiled ops: one line, exit 1, no traceback."""
    mmdet = pytest.importorskip('mmdet')
    config = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
                      'retinanet_r18_fpn_1x_coco.py')
    if not osp.isfile(config):
        pytest.skip('mmdet was installed without its configs')
    # Hide mmcv._ext in the tool's process, as an mmcv built without ops would.
    code = ('import runpy, sys; sys.modules["mmcv._ext"] = None; '
            f'sys.argv = [{TRAIN!r}, {config!r}]; runpy.run_path({TRAIN!r}, run_name="__main__")')
    proc = run(['-c', code], cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if 'error:' in line]) == 1, proc.stderr
    assert 'built without its compiled ops' in proc.stderr
    assert 'tools/setup_env.sh' in proc.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def torchrun_command():
    """torchrun of the interpreter running the tests, or None."""
    exe = osp.join(osp.dirname(sys.executable), 'torchrun')
    if osp.isfile(exe):
        return [exe]
    found = shutil.which('torchrun')
    return [found] if found else None


@pytest.mark.skipif(torchrun_command() is None, reason='torchrun is not installed')
def test_two_process_gloo_training(config, tmp_path):
    work_dir = str(tmp_path / 'ddp')
    cmd = torchrun_command() + [
        '--nproc_per_node=2', '--master_addr=127.0.0.1', f'--master_port={free_port()}',
        TRAIN, config, '--launcher', 'pytorch', '--work-dir', work_dir]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=TIMEOUT, env=env)
    assert_ok(proc)
    log = proc.stdout + proc.stderr
    # mmengine's environment report; 'GPU number' is the world size.
    assert 'Distributed launcher: pytorch' in log and 'GPU number: 2' in log, log[-3000:]
    # Both ranks finished: torchrun exits 0 only when every worker did.
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    accuracy(log)


# --------------------------------------------------------------------------------------
# Launch scripts, against stand-ins for torchrun/srun that print their arguments.
# --------------------------------------------------------------------------------------


@pytest.fixture
def fake_launchers(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('torchrun', 'srun'):
        exe = bin_dir / name
        exe.write_text('#!/bin/sh\necho "%s $*"\n' % name)
        exe.chmod(0o755)
    return dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')


def script(name, *args, env):
    return subprocess.run(['bash', osp.join(REPO, 'tools', name), *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_dist_scripts_call_torchrun(fake_launchers):
    env = dict(fake_launchers, NNODES='2', NODE_RANK='1', PORT='1234')
    out = script('dist_train.sh', 'cfg.py', '4', '--amp', env=env).stdout
    assert out.startswith('torchrun ')
    for part in ('--nnodes=2', '--node_rank=1', '--master_addr=127.0.0.1',
                 '--master_port=1234', '--nproc_per_node=4',
                 'tools/train.py cfg.py --launcher pytorch --amp'):
        assert part in out, out
    out = script('dist_test.sh', 'cfg.py', 'ck.pth', '2', '--out', 'r.pkl',
                 env=fake_launchers).stdout
    for part in ('--nnodes=1', '--node_rank=0', '--master_port=29500', '--nproc_per_node=2',
                 'tools/test.py cfg.py ck.pth --launcher pytorch --out r.pkl'):
        assert part in out, out


def test_slurm_scripts_call_srun(fake_launchers):
    env = dict(fake_launchers, GPUS='16', SRUN_ARGS='--quotatype=auto')
    out = script('slurm_train.sh', 'part', 'job', 'cfg.py', 'wd', '--amp', env=env).stdout
    assert out.startswith('srun ')
    for part in ('-p part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
                 '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
                 '--quotatype=auto', 'tools/train.py cfg.py --work-dir=wd --launcher=slurm --amp'):
        assert part in out, out
    out = script('slurm_test.sh', 'part', 'job', 'cfg.py', 'ck.pth', env=fake_launchers).stdout
    assert 'tools/test.py cfg.py ck.pth --launcher=slurm' in out, out


def test_scripts_print_usage_without_arguments(fake_launchers):
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'):
        proc = script(name, env=fake_launchers)
        assert proc.returncode == 2 and 'usage' in proc.stderr.lower(), (name, proc.stderr)
