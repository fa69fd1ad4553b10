"""Faults during training lose nothing: a killed run resumes and repeats the uninterrupted one,
a kill while a checkpoint is written leaves the previous one usable, and a diverged run stops
with one clear line.

tools/train.py runs as a subprocess, as users run it, on a tiny CMT classifier (16 generated
32x32 images, 4 iterations per epoch) with random crops, flips and drop path, on the shipped
mmpretrain runtime (configs/_base_/default_runtime_mmpretrain.py). Its data augmentations run
in one dataloader worker started with each epoch, or in two persistent ones, as in the shipped
configs: a resumed run starts new workers, and repeats the augmentations because its
IterationSeedHook seeds each sample from the seed, the epoch and the sample's position.
"""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tiny_data import write_two_class_images

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TIMEOUT = 180
ITERS_PER_EPOCH = 4
MAX_ITERS = 24  # 6 epochs
CHECKPOINT_INTERVAL = 3

CONFIG = """
_base_ = {runtime!r}
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
    backbone=dict(
        type='cmt_mm.CMT',
        arch=dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], mlp_ratio=2.,
                  stem_channels=8),
        pretrain_img_size=32, out_indices=(3, ), drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=128,
              loss=dict(type='CrossEntropyLoss')))
pipeline = [
    dict(type='cmt_mm.SafeLoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
# One worker, started with each epoch: the augmentations run there (see IterationSeedHook).
# PERSISTENT_WORKERS below: two workers, kept from one epoch to the next.
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root={data_root!r}, pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
train_cfg = dict(type='cmt_mm.ResumableEpochBasedTrainLoop', max_epochs={max_epochs})
# Checkpoints inside epochs; only the latest kept, as mmengine deletes before it writes.
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval={interval}, max_keep_ckpts=1))
log_processor = dict(window_size=1)  # the loss of each iteration, not a moving average
randomness = dict(seed=0)
"""

PERSISTENT_WORKERS = """
_base_ = {base!r}
train_dataloader = dict(num_workers=2, persistent_workers=True)
"""

# Test-only: SIGKILL the process halfway through writing a file whose name contains NAME
# (whatever the writer calls it), like a kill or power cut during a save.
KILL_WHILE_WRITING = """
import builtins
import os
import signal

NAME = {name!r}
_open = builtins.open


class _DieHalfway:
    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[:len(data) // 2])
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._file.__exit__(*exc_info)


def _open_to_die(file, mode='r', *args, **kwargs):
    opened = _open(file, mode, *args, **kwargs)
    if 'w' in mode and 'b' in mode and NAME in os.path.basename(str(file)):
        return _DieHalfway(opened)
    return opened


builtins.open = _open_to_die
"""

# Test-only: a cross-entropy loss that turns NaN from its NAN_FROM-th call (iteration) on.
NAN_LOSS = """
from mmpretrain.models.losses import CrossEntropyLoss
from mmpretrain.registry import MODELS

NAN_FROM = {nan_from}


@MODELS.register_module()
class NaNFromIterationLoss(CrossEntropyLoss):
    calls = 0

    def forward(self, *args, **kwargs):
        NaNFromIterationLoss.calls += 1
        loss = super().forward(*args, **kwargs)
        return loss * float('nan') if NaNFromIterationLoss.calls >= NAN_FROM else loss
"""


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp('faults')
    path = root / 'tiny_cmt_cls.py'
    path.write_text(CONFIG.format(
        runtime=osp.join(REPO, 'configs', '_base_', 'default_runtime_mmpretrain.py'),
        data_root=str(write_two_class_images(root)), max_epochs=MAX_ITERS // ITERS_PER_EPOCH,
        interval=CHECKPOINT_INTERVAL))
    return path


def environment(python_path=None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1')  # two shared cores
    if python_path is not None:
        env['PYTHONPATH'] = os.pathsep.join([str(python_path), env.get('PYTHONPATH', '')])
    return env


class Run:
    """tools/train.py started in the background; most of a run is start-up, so runs overlap."""

    def __init__(self, config, work_dir, *args, python_path=None):
        self.work_dir = work_dir
        self._out = open(f'{work_dir}.stdout', 'w+')
        self._err = open(f'{work_dir}.stderr', 'w+')
        self.proc = subprocess.Popen(
            [sys.executable, TRAIN, str(config), '--work-dir', str(work_dir), *args],
            stdout=self._out, stderr=self._err, text=True, env=environment(python_path))

    def wait(self) -> 'Run':
        try:
            self.returncode = self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.stdout, self.stderr = (read(f) for f in (self._out, self._err))
        self.log = self.stdout + self.stderr
        return self

    def assert_ok(self):
        assert self.returncode == 0, self.log[-5000:]


def read(file) -> str:
    file.seek(0)
    text = file.read()
    file.close()
    return text


def newest_losses(work_dir) -> dict:
    """Iteration -> loss, as logged by the newest run in ``work_dir``."""
    runs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert runs, list(work_dir.iterdir())
    records = [json.loads(line) for line in runs[-1].read_text().splitlines()]
    return {r['iter']: r['loss'] for r in records if 'loss' in r}


def latest_checkpoint(work_dir) -> str:
    return (work_dir / 'last_checkpoint').read_text().strip()


def checkpoint_iteration(path: str) -> int:
    return int(osp.basename(path)[len('iter_'):-len('.pth')])


def load_weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def kill_inside_second_epoch(*runs: Run) -> None:
    """SIGKILL each run as soon as a checkpoint inside its second epoch is the latest."""
    deadline = time.monotonic() + TIMEOUT
    running = list(runs)
    while running:
        for run in list(running):
            last_checkpoint = run.work_dir / 'last_checkpoint'
            if (last_checkpoint.is_file()
                    and checkpoint_iteration(latest_checkpoint(run.work_dir)) >= 6):
                os.kill(run.proc.pid, signal.SIGKILL)
                running.remove(run)
            else:
                assert run.proc.poll() is None, 'the run ended before it could be killed'
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.fixture(scope='module')
def runs(tiny_config, tmp_path_factory):
    """Every run of this module: the first ones together, then the two resumed ones.

    Returns the finished runs by name, and what a kill while saving left in the work dir.
    """
    root = tmp_path_factory.mktemp('runs')
    persistent = root / 'persistent_workers.py'
    persistent.write_text(PERSISTENT_WORKERS.format(base=str(tiny_config)))
    (root / 'kill_while_writing.py').write_text(KILL_WHILE_WRITING.format(name='iter_9.pth'))
    killed_at_save = root / 'killed_at_save.py'
    killed_at_save.write_text(f'_base_ = {str(tiny_config)!r}\n'
                              "custom_imports = dict(imports=['kill_while_writing'])\n")
    (root / 'nan_loss.py').write_text(NAN_LOSS.format(nan_from=3))
    nan_at_3 = root / 'nan_at_3.py'
    nan_at_3.write_text(f'_base_ = {str(tiny_config)!r}\n'
                        "custom_imports = dict(imports=['nan_loss'])\n"
                        "model = dict(head=dict(loss=dict(type='NaNFromIterationLoss')))\n"
                        'default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1))\n')

    configs = dict(killed=tiny_config, killed_at_save=tiny_config, killed_persistent=persistent)
    started = dict(
        uninterrupted=Run(tiny_config, root / 'uninterrupted'),
        uninterrupted_persistent=Run(persistent, root / 'uninterrupted_persistent'),
        killed=Run(tiny_config, root / 'killed'),
        killed_persistent=Run(persistent, root / 'killed_persistent'),
        killed_at_save=Run(killed_at_save, root / 'killed_at_save', python_path=root),
        nan=Run(nan_at_3, root / 'nan', python_path=root))
    kill_inside_second_epoch(started['killed'], started['killed_persistent'])
    finished = {name: run.wait() for name, run in started.items()}
    after_save_kill = root / 'killed_at_save'
    left_by_save_kill = dict(files=sorted(os.listdir(after_save_kill)),
                             latest=latest_checkpoint(after_save_kill))

    resumed = {f'{name}_resumed': Run(config, root / name, '--resume')
               for name, config in configs.items()}
    finished.update({name: run.wait() for name, run in resumed.items()})
    return finished, left_by_save_kill


def never_stopped(runs, name: str):
    """The reference: the run never stopped; (work_dir, losses by iteration)."""
    run = runs[0][name]
    run.assert_ok()
    losses = newest_losses(run.work_dir)
    assert sorted(losses) == list(range(1, MAX_ITERS + 1))
    return run.work_dir, losses


@pytest.fixture(scope='module')
def uninterrupted(runs):
    return never_stopped(runs, 'uninterrupted')


def assert_resumed_run_repeats(uninterrupted, run: Run, resumed_from: int):
    run.assert_ok()
    reference_dir, reference = uninterrupted
    checkpoint = run.work_dir / f'iter_{resumed_from}.pth'
    assert f'Auto resumed from the latest checkpoint {checkpoint}' in run.log, run.log[-3000:]
    losses = newest_losses(run.work_dir)
    # Exactly the iterations after the checkpoint, with the losses of the uninterrupted run.
    assert sorted(losses) == list(range(resumed_from + 1, MAX_ITERS + 1))
    assert losses == {i: reference[i] for i in losses}
    final = f'iter_{MAX_ITERS}.pth'
    expected, got = load_weights(reference_dir / final), load_weights(run.work_dir / final)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.parametrize('workers', ['', '_persistent'])
def test_killed_mid_epoch_resumes_as_if_never_stopped(runs, workers):
    killed, resumed = runs[0][f'killed{workers}'], runs[0][f'killed{workers}_resumed']
    assert killed.returncode == -signal.SIGKILL, killed.log[-3000:]
    resumed_from = int(re.search(r'Auto resumed from the latest checkpoint .*iter_(\d+)\.pth',
                                 resumed.log)[1])
    assert resumed_from >= 6 and resumed_from % ITERS_PER_EPOCH != 0  # inside an epoch
    assert f'its first {resumed_from % ITERS_PER_EPOCH} batches' in resumed.log
    assert_resumed_run_repeats(never_stopped(runs, f'uninterrupted{workers}'), resumed,
                               resumed_from)


def test_augmentations_do_not_depend_on_the_workers(runs, uninterrupted):
    """One worker started with each epoch or two persistent ones: the same training."""
    assert never_stopped(runs, 'uninterrupted_persistent')[1] == uninterrupted[1]


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(runs, uninterrupted):
    finished, left = runs
    killed = finished['killed_at_save']
    assert killed.returncode == -signal.SIGKILL, killed.log[-3000:]
    # The half-written bytes are in a temporary file; the checkpoint before is complete and
    # still the latest (mmengine deletes it first, with max_keep_ckpts=1, then writes
    # iter_9.pth in place).
    work_dir = killed.work_dir
    assert left['latest'] == str(work_dir / 'iter_6.pth')
    partial = [name for name in left['files'] if name.startswith('.iter_9.pth.')]
    assert len(partial) == 1 and 'iter_9.pth' not in left['files'], left['files']

    resumed = finished['killed_at_save_resumed']
    assert f'Deleted {work_dir / partial[0]}' in resumed.log
    assert not list(work_dir.glob('.*'))
    assert_resumed_run_repeats(uninterrupted, resumed, 6)


def test_nan_loss_stops_with_one_line_naming_the_iteration(runs):
    run = runs[0]['nan']
    assert run.returncode == 1, run.log[-3000:]
    assert 'Traceback' not in run.log
    errors = [line for line in run.stderr.splitlines() if 'error:' in line]
    assert len(errors) == 1, run.stderr[-3000:]
    assert 'iteration 3 ' in errors[0] and 'loss=nan' in errors[0], errors[0]
    # Nothing of the diverged iteration is saved; the latest checkpoint is the last good one.
    assert str(run.work_dir / 'iter_2.pth') in errors[0]
    assert latest_checkpoint(run.work_dir) == str(run.work_dir / 'iter_2.pth')
    assert not (run.work_dir / 'iter_3.pth').exists()
    weights = load_weights(run.work_dir / 'iter_2.pth')
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
