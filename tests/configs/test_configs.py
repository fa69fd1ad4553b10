"""Every shipped config parses and builds its model; the COCO 1x configs follow the paper.

Models are built by the registry of the config's ``default_scope`` and never initialised
(``init_weights`` would load the ImageNet checkpoints, which the tests do not have).
"""
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

REPO = Path(__file__).resolve().parents[2]
# Picked up by glob, so that configs added later are tested too; _base_ files are fragments.
CONFIGS = sorted(path for path in (REPO / 'configs').glob('**/*.py')
                 if '_base_' not in path.relative_to(REPO / 'configs').parts)
VARIANTS = ('ti', 'xs', 's', 'b')
COCO_1X = [f'configs/{detector}_cmt_{variant}_1x_coco.py'
           for detector in ('retinanet', 'mask_rcnn') for variant in VARIANTS]


@pytest.fixture(scope='module', autouse=True)
def environment():
    """As tools/train.py does before model modules are imported."""
    from cmt_mm.utils.compat import setup_environment
    setup_environment(detection=True)


def scope_registry(scope: str):
    """The MODELS registry of a config's default_scope."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmpretrain':
        from mmpretrain.registry import MODELS
    else:
        pytest.fail(f"default_scope {scope!r}: expected 'mmdet' or 'mmpretrain'")
    return MODELS


def load(relative_path: str) -> Config:
    return Config.fromfile(str(REPO / relative_path))  # imports custom_imports (cmt_mm.models)


def test_configs_are_found():
    names = {str(path.relative_to(REPO)) for path in CONFIGS}
    assert set(COCO_1X) <= names
    assert not any('/_base_/' in name for name in names)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_config_builds_its_model(path):
    cfg = load(str(path.relative_to(REPO)))
    scope = cfg.get('default_scope')
    registry = scope_registry(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    # Built from the scope's own package, e.g. mmdet.models.detectors.retinanet.RetinaNet.
    assert type(model).__module__.split('.')[0] == scope, type(model)

    # Channel counts are written out in the configs; a wrong one fails only in forward.
    backbone = model.backbone
    if type(backbone).__name__ == 'CMT':
        channels = [backbone.embed_dims[i] for i in backbone.out_indices]
        neck = cfg.model.get('neck')
        if neck is not None and 'in_channels' in neck:  # FPN
            assert list(neck.in_channels) == channels
        else:  # a classifier: the head reads the pooled last stage
            assert cfg.model.head.in_channels == channels[-1]


def find_transform(pipeline, name: str) -> dict:
    found = [t for t in pipeline if t['type'].split('.')[-1] == name]
    assert len(found) == 1, pipeline
    return found[0]


@pytest.mark.parametrize('path', COCO_1X)
def test_coco_1x_protocol(path):
    """The CMT paper's COCO 1x recipe (see configs/_base_/schedules/detection_adamw_1x.py)."""
    cfg = load(path)
    variant = path.split('_cmt_')[1].split('_')[0]

    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    schedulers = {s['type']: s for s in cfg.param_scheduler}
    assert set(schedulers) == {'LinearLR', 'MultiStepLR'}
    warmup, steps = schedulers['LinearLR'], schedulers['MultiStepLR']
    assert not warmup['by_epoch'] and warmup['begin'] == 0 and warmup['end'] == 1000
    assert warmup['start_factor'] < 1
    assert steps['by_epoch'] and steps['milestones'] == [8, 11] and steps['gamma'] == 0.1
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.lr == 1e-4
    assert optimizer.weight_decay == 0.05

    # 8 GPUs x 2 images; --auto-scale-lr rescales lr from this total.
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16

    train_pipeline = cfg.train_dataloader.dataset.pipeline
    resize = find_transform(train_pipeline, 'Resize')
    assert tuple(resize['scale']) == (1333, 800) and resize['keep_ratio']
    assert find_transform(train_pipeline, 'RandomFlip')['prob'] == 0.5
    for split in ('val', 'test'):
        resize = find_transform(cfg[f'{split}_dataloader'].dataset.pipeline, 'Resize')
        assert tuple(resize['scale']) == (1333, 800) and resize['keep_ratio']
    assert cfg.model.data_preprocessor.pad_size_divisor == 32

    backbone = cfg.model.backbone
    assert backbone.type == 'cmt_mm.CMT' and backbone.arch == variant
    assert backbone.init_cfg == dict(type='Pretrained',
                                     checkpoint=f'checkpoints/cmt-{variant}_in1k.pth')
