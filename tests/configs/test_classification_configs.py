"""The classification configs: each builds its model, the ImageNet ones follow the released
recipes, and the transfer ones start from the converted ImageNet classifier and fine-tune
through tools/train.py on real CIFAR-10 images."""
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.datasets import CIFAR10
from mmpretrain.registry import MODELS
from PIL import Image
from tiny_data import extract_cifar10_jpegs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300

# config -> number of classes
CLASSIFICATION_CONFIGS = {
    'cmt/cmt-ti_8xb128_in1k.py': 1000,
    'cmt/cmt-xs_8xb128_in1k.py': 1000,
    'cmt/cmt-s_8xb128_in1k.py': 1000,
    'cmt/cmt-b_8xb128_in1k.py': 1000,
    'cmt/cmt-s_8xb128_in100.py': 100,
    'cmt_transfer/cmt-s_8xb64_cifar10.py': 10,
    'cmt_transfer/cmt-s_8xb64_cifar100.py': 100,
    'cmt_transfer/cmt-s_8xb64_flowers102.py': 102,
    'cmt_transfer/cmt-s_8xb64_oxford-pets.py': 37,
    'cmt_transfer/cmt-s_8xb64_stanford-cars.py': 196,
    'cifar10_scratch/cmt-s_1xb1024_cifar10-64px.py': 10,
    'cifar10_scratch/vit-s-p8_1xb1024_cifar10-64px.py': 10,
}
TRANSFER_CONFIGS = [name for name in CLASSIFICATION_CONFIGS if name.startswith('cmt_transfer/')]
PRETRAINED = 'checkpoints/cmt-s_in1k.pth'


def load_config(name: str) -> Config:
    return Config.fromfile(REPO / 'configs' / name)


def test_every_classification_config_is_listed():
    shipped = {str(path.relative_to(REPO / 'configs'))
               for folder in ('cmt', 'cmt_transfer', 'cifar10_scratch')
               for path in (REPO / 'configs' / folder).glob('*.py')}
    assert shipped == set(CLASSIFICATION_CONFIGS)


@pytest.mark.parametrize('name', list(CLASSIFICATION_CONFIGS))
def test_config_builds_its_model(name):
    cfg = load_config(name)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model).eval()
    num_classes = CLASSIFICATION_CONFIGS[name]
    assert cfg.data_preprocessor.num_classes == num_classes
    with torch.no_grad():  # a small input: the head must fit the backbone and the classes
        assert model(torch.zeros(1, 3, 64, 64), mode='tensor').shape == (1, num_classes)
    if name in TRANSFER_CONFIGS:
        assert cfg.model.backbone.init_cfg.checkpoint == PRETRAINED
        assert cfg.model.head.init_cfg[1].checkpoint == PRETRAINED


@pytest.mark.parametrize('name', list(CLASSIFICATION_CONFIGS))
def test_batches_are_stacked_in_the_workers(name):
    """Fixed-size images are collated into one tensor by the workers; mmengine's default (a
    list of per-image tensors) made receiving a batch cost the training process more than the
    model's step (measured: ~1 s per 1024 64x64 images against 38 ms stacked)."""
    cfg = load_config(name)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].collate_fn == dict(type='default_collate'), loader
    if name.startswith('cifar10_scratch/'):
        assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_epochs  # the cosine ends with it


# The released runs (cmt_pytorch's README commands on its DeiT/timm train.py): image size,
# images per iteration, lr per 512 images, warm-up start lr, cosine end lr, cosine epochs,
# weight decay, drop-path, head dropout, EMA decay per iteration (None: no EMA).
RELEASED = {
    'ti': dict(size=160, batch=2048, lr=8e-4, warmup_lr=1e-7, min_lr=1e-5, epochs=800,
               weight_decay=0.05, drop_path=0.1, dropout=0.1, ema_decay=None),
    'xs': dict(size=192, batch=2048, lr=7e-4, warmup_lr=1e-6, min_lr=2e-5, epochs=400,
               weight_decay=0.04, drop_path=0.08, dropout=0.1, ema_decay=0.9998),
    's': dict(size=224, batch=1024, lr=5e-4, warmup_lr=1e-7, min_lr=1e-5, epochs=300,
              weight_decay=0.05, drop_path=0.1, dropout=0.1, ema_decay=0.99996),
    'b': dict(size=256, batch=512, lr=5e-4, warmup_lr=1e-6, min_lr=2e-5, epochs=300,
              weight_decay=0.05, drop_path=0.25, dropout=0.3, ema_decay=0.99996),
}
WARMUP_EPOCHS, COOLDOWN_EPOCHS = 20, 10  # timm keeps min_lr for 10 epochs after the cosine


def by_type(transforms, name):
    (transform, ) = [t for t in transforms if t['type'] == name]
    return transform


@pytest.mark.parametrize('variant', list(RELEASED))
def test_imagenet_config_follows_the_released_recipe(variant):
    released = RELEASED[variant]
    cfg = load_config(f'cmt/cmt-{variant}_8xb128_in1k.py')

    batch = 8 * cfg.train_dataloader.batch_size
    assert cfg.auto_scale_lr.base_batch_size == batch
    assert cfg.train_dataloader.sampler.type == 'RepeatAugSampler'
    optimizer = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and optimizer.type == 'AdamW'
    assert math.isclose(optimizer.lr * 512 / batch, released['lr'])  # DeiT's linear rule
    assert optimizer.weight_decay == released['weight_decay']
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)

    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and (warmup.begin, warmup.end) == (0, WARMUP_EPOCHS)
    assert math.isclose(warmup.start_factor * optimizer.lr, released['warmup_lr'])
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == released['min_lr']
    assert (cosine.begin, cosine.end) == (WARMUP_EPOCHS, released['epochs'])
    assert cosine.T_max == cosine.end - cosine.begin
    assert cfg.train_cfg.max_epochs == released['epochs'] + COOLDOWN_EPOCHS

    ema_hooks = [hook for hook in cfg.custom_hooks if hook.type == 'EMAHook']
    if released['ema_decay'] is None:
        assert not ema_hooks
    else:
        (ema, ) = ema_hooks
        # the same average over images as the released decay per iteration of its batch
        expected = (1 - released['ema_decay']) * batch / released['batch']
        assert math.isclose(ema.momentum, expected) and ema.update_buffers

    backbone, head = cfg.model.backbone, cfg.model.head
    assert backbone.arch == variant and backbone.drop_path_rate == released['drop_path']
    assert head.dropout == released['dropout']
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [dict(type='Mixup', alpha=0.8),
                                            dict(type='CutMix', alpha=1.0)]

    train = cfg.train_dataloader.dataset.pipeline
    crop = by_type(train, 'RandomResizedCrop')
    assert crop.scale == released['size'] and crop.interpolation == 'bicubic'
    rand_augment = by_type(train, 'RandAugment')  # rand-m9-mstd0.5-inc1
    assert (rand_augment.policies, rand_augment.num_policies, rand_augment.magnitude_level,
            rand_augment.magnitude_std) == ('timm_increasing', 2, 9, 0.5)
    erasing = by_type(train, 'RandomErasing')
    assert erasing.erase_prob == 0.25 and erasing.mode == 'rand'

    test = cfg.test_dataloader.dataset.pipeline
    resize = by_type(test, 'ResizeEdge')
    assert resize.edge == 'short' and resize.interpolation == 'bicubic'
    assert resize.scale == int(256 / 224 * released['size'])
    assert by_type(test, 'CenterCrop').crop_size == released['size']


# ---------------------------------------------------------------------------------------
# Transfer configs, from a CMT-S ImageNet classifier with random weights
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def pretrained_cmt_s(tmp_path_factory):
    """A CMT-S ImageNet classifier checkpoint in the format tools/model_converters/cmt_to_mm.py
    writes, with this project's random initialisation (with the released model's, activations
    degenerate into denormal floats and a CPU training step is tens of times slower)."""
    torch.manual_seed(0)
    init_default_scope('mmpretrain')
    classifier = MODELS.build(load_config('cmt/cmt-s_8xb128_in1k.py').model)
    classifier.init_weights()
    path = tmp_path_factory.mktemp('pretrained') / 'cmt-s_in1k.pth'
    torch.save({'state_dict': classifier.state_dict()}, path)
    return path


def test_transfer_config_starts_from_the_classifier_but_its_fc(pretrained_cmt_s):
    cfg = load_config('cmt_transfer/cmt-s_8xb64_cifar100.py')
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(pretrained_cmt_s),
                         'model.head.init_cfg.1.checkpoint': str(pretrained_cmt_s)})
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()

    pretrained = torch.load(pretrained_cmt_s)['state_dict']
    loaded = model.state_dict()
    fc_keys = {'head.fc.weight', 'head.fc.bias'}
    assert set(loaded) == set(pretrained)
    for key in set(loaded) - fc_keys:
        assert torch.equal(loaded[key], pretrained[key]), key
    assert loaded['head.fc.weight'].shape == (100, 1280)
    assert 0.015 < loaded['head.fc.weight'].std() < 0.025  # trunc-normal, std 0.02
    assert not loaded['head.fc.bias'].any()


def write_cifar10_batches(root: Path, images: dict) -> None:
    """cifar-10-batches-py as released: pickled N x 3072 rows (R, G, B planes) and labels, the
    training images spread over data_batch_1..5."""
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    classes = list(CIFAR10.METAINFO['classes'])

    def dump(filename, samples):
        entry = dict(
            batch_label=filename,
            data=np.stack([pixels.transpose(2, 0, 1).reshape(-1) for pixels, _ in samples]),
            labels=[classes.index(name) for _, name in samples],
            filenames=[f'{name}_{i}.png' for i, (_, name) in enumerate(samples)])
        with open(folder / filename, 'wb') as f:
            pickle.dump(entry, f, protocol=2)

    train = images['train']
    for number, indices in enumerate(np.array_split(np.arange(len(train)), 5), 1):
        dump(f'data_batch_{number}', [train[i] for i in indices])
    dump('test_batch', images['test'])
    with open(folder / 'batches.meta', 'wb') as f:
        pickle.dump(dict(label_names=classes), f, protocol=2)


def assert_one_step_and_one_evaluation(work_dir: Path) -> None:
    """The run logged one finite training loss and one top-1 accuracy."""
    (scalars, ) = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in scalars.read_text().splitlines()]
    losses = [r['loss'] for r in records if 'loss' in r]
    accuracies = [r['accuracy/top1'] for r in records if 'accuracy/top1' in r]
    assert len(losses) == 1 and math.isfinite(losses[0]) and losses[0] > 0
    assert len(accuracies) == 1 and 0 <= accuracies[0] <= 100


# tools/train.py, with mmpretrain's MD5 check of the CIFAR files off: the fixture holds real
# CIFAR-10 images, but not the released files.
TRAIN_WITHOUT_CIFAR_MD5 = f"""
import runpy, sys
from cmt_mm.utils.compat import setup_environment
setup_environment()
from mmpretrain.datasets import CIFAR10
for split in ('train_list', 'test_list'):
    setattr(CIFAR10, split, [[name, None] for name, _ in getattr(CIFAR10, split)])
sys.argv = [{str(REPO / 'tools' / 'train.py')!r}] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_cifar10_transfer_trains_and_evaluates_through_tools_train(pretrained_cmt_s, tmp_path):
    """One iteration on 5 real CIFAR-10 training images (of 5 classes), then validation on 5
    test images, with the shipped config at 64 x 64 instead of 224 x 224 to be quick on CPU
    (the pretrained position biases are resized to fit)."""
    images = extract_cifar10_jpegs(['bird', 'frog', 'dog', 'automobile', 'airplane'])
    write_cifar10_batches(tmp_path / 'cifar10', images)
    work_dir = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, '-c', TRAIN_WITHOUT_CIFAR_MD5,
         str(REPO / 'configs/cmt_transfer/cmt-s_8xb64_cifar10.py'), '--work-dir', str(work_dir),
         '--cfg-options',
         f'model.backbone.init_cfg.checkpoint={pretrained_cmt_s}',
         f'model.head.init_cfg.1.checkpoint={pretrained_cmt_s}',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'randomness.seed=0',
         'default_hooks.checkpoint=None',
         'train_dataloader.dataset.pipeline.0.scale=64',  # RandomResizedCrop
         'val_dataloader.dataset.pipeline.0.scale=(64,64)',  # Resize
         *(f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
           for key in ('batch_size=5', 'num_workers=0', 'persistent_workers=False'))],
        env={**os.environ, 'CIFAR10_ROOT': f'{tmp_path / "cifar10"}/'},
        capture_output=True, text=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f'backbone tensors from {pretrained_cmt_s}' in output

    assert_one_step_and_one_evaluation(work_dir)


@pytest.mark.parametrize('name', [name for name in CLASSIFICATION_CONFIGS
                                  if name.startswith('cifar10_scratch/')])
def test_cifar10_scratch_trains_and_evaluates_through_tools_train(name, tmp_path):
    """One iteration on 5 real CIFAR-10 training JPEGs (of 5 classes) in the class-folder layout
    the config reads, then validation on 5 test JPEGs, with the shipped config (64 x 64)."""
    images = extract_cifar10_jpegs(['bird', 'frog', 'dog', 'automobile', 'airplane'])
    root = tmp_path / 'cifar10-jpg'
    for split, samples in images.items():
        for i, (pixels, class_name) in enumerate(samples):
            (root / split / class_name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / class_name / f'{i}.jpg', quality=95)
    work_dir = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(REPO / 'configs' / name),
         '--work-dir', str(work_dir), '--cfg-options',
         'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'randomness.seed=0',
         'default_hooks.checkpoint=None',
         *(f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader')
           for key in ('batch_size=5', 'num_workers=0', 'persistent_workers=False'))],
        env={**os.environ, 'CIFAR10_JPG_ROOT': f'{root}/'},
        capture_output=True, text=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    assert_one_step_and_one_evaluation(work_dir)
