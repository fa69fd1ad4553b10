"""tools/train.py and tools/test.py on bad checkpoints and bad config values: one line on stderr,
exit status 2, no traceback; and a genuine bug still shows its traceback.

The tools run as subprocesses on a tiny CMT-Ti classifier config whose four 32x32 images are
never read: every case fails before the first iteration.
"""
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from cli_errors import error_line
from tool_modules import load_tool
from cmt_mm.models import CMT

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
RETINANET = osp.join(REPO, 'configs', 'retinanet_cmt_ti_1x_coco.py')

CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['cmt_mm.models'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=2, mean=[127.5] * 3,
                           std=[127.5] * 3),
    backbone=dict(type='cmt_mm.CMT', arch='ti', pretrain_img_size=32, out_indices=(3, ),
                  frozen_stages=-1, init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=368,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
dataset = dict(type='CustomDataset', data_root={data_root!r},
               pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])
train_dataloader = dict(batch_size=2, num_workers=0, dataset=dataset,
                        sampler=dict(type='DefaultSampler', shuffle=True))
test_dataloader = dict(batch_size=2, num_workers=0, dataset=dataset,
                       sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='Accuracy', topk=(1, ))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
train_cfg = dict(by_epoch=True, max_epochs=1)
test_cfg = dict()
env_cfg = dict(dist_cfg=dict(backend='gloo'))
load_from = None
resume = False
"""


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """The config, its images and checkpoints of the classifier and of parts of it."""
    from PIL import Image
    root = tmp_path_factory.mktemp('bad_inputs')
    for name in ('cat', 'dog'):
        (root / 'data' / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
                root / 'data' / name / f'{name}{i}.png')
    (root / 'cmt_cls.py').write_text(CONFIG.format(data_root=str(root / 'data')))

    backbone = OrderedDict((f'backbone.{k}', v)
                           for k, v in CMT('ti', pretrain_img_size=32).state_dict().items())
    head = {'head.fc.weight': torch.zeros(2, 368), 'head.fc.bias': torch.zeros(2)}
    torch.save({'state_dict': backbone}, root / 'backbone.pth')
    torch.save({'state_dict': {**backbone, **head}}, root / 'classifier.pth')
    neck_and_head = {'neck.conv.weight': torch.zeros(8, 368, 1, 1),
                     'bbox_head.conv.weight': torch.zeros(4, 8, 3, 3)}
    torch.save({'state_dict': {**backbone, **neck_and_head}}, root / 'detector.pth')
    (root / 'corrupt.pth').write_bytes((root / 'backbone.pth').read_bytes()[:5000])
    return root


def run(args, cwd, env=None):
    return subprocess.run([sys.executable] + args, cwd=str(cwd), capture_output=True, text=True,
                          timeout=300, env=env)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def test_test_refuses_a_backbone_checkpoint_for_the_classifier(workspace):
    proc = run([TEST, 'cmt_cls.py', 'backbone.pth'], workspace)
    line = error_line(proc)
    assert line.startswith("test.py: error: 'backbone.pth' does not fit this ImageClassifier: ")
    assert 'the checkpoint has no head' in line
    assert 'missing (2; head 2/2): head.fc.weight, head.fc.bias' in line


def test_test_names_another_variant(workspace):
    # The head's input width follows the backbone's last stage.
    proc = run([TEST, 'cmt_cls.py', 'classifier.pth', '--cfg-options', 'model.backbone.arch=xs',
                'model.head.in_channels=416'], workspace)
    assert "the checkpoint holds CMT arch 'ti'" in error_line(proc)


def test_test_refuses_a_corrupt_checkpoint_before_building_anything(workspace, tmp_path):
    proc = run([TEST, str(workspace / 'cmt_cls.py'), str(workspace / 'corrupt.pth'),
                '--work-dir', str(tmp_path / 'work')], tmp_path)
    assert 'is not a readable PyTorch checkpoint: it is a zip archive that is truncated' \
        in error_line(proc)
    assert not (tmp_path / 'work').exists()


def test_train_load_from_a_backbone_checkpoint(workspace, tmp_path):
    proc = run([TRAIN, str(workspace / 'cmt_cls.py'), '--work-dir', str(tmp_path), '--cfg-options',
                f'load_from={workspace / "backbone.pth"}'], tmp_path)
    line = error_line(proc)
    assert 'backbone.pth' in line and 'the checkpoint has no head' in line
    assert not list(tmp_path.glob('*.pth'))  # nothing was trained


def test_train_refuses_a_detector_checkpoint_in_the_backbone_init_cfg(workspace, tmp_path):
    """Loaded inside runner.train(), by the backbone's init_weights."""
    proc = run([TRAIN, str(workspace / 'cmt_cls.py'), '--work-dir', str(tmp_path), '--cfg-options',
                'model.backbone.init_cfg.type=Pretrained',
                f'model.backbone.init_cfg.checkpoint={workspace / "detector.pth"}'], tmp_path)
    line = error_line(proc)
    assert 'detector.pth' in line
    assert 'is a detector checkpoint (it has bbox_head), not a backbone one' in line


def test_train_resume_from_weights_without_training_state(workspace, tmp_path):
    proc = run([TRAIN, str(workspace / 'cmt_cls.py'), '--work-dir', str(tmp_path), '--resume',
                str(workspace / 'classifier.pth')], tmp_path)
    line = error_line(proc)
    assert 'holds no training state' in line
    assert f'--cfg-options load_from={workspace / "classifier.pth"}' in line


def test_train_resume_with_other_optimizer_groups(workspace, tmp_path):
    """A checkpoint of mmengine's one group per parameter, resumed with merged groups."""
    configs = {}
    for constructor in ('DefaultOptimWrapperConstructor',
                        'cmt_mm.MergedGroupsOptimWrapperConstructor'):
        configs[constructor] = tmp_path / f'{constructor}.py'
        configs[constructor].write_text(
            f'_base_ = [{str(workspace / "cmt_cls.py")!r}]\n'
            f'optim_wrapper = dict(constructor={constructor!r}, optimizer=dict(weight_decay=1e-4), '
            'paramwise_cfg=dict(norm_decay_mult=0.))\n')
    work_dir = str(tmp_path / 'work')
    trained = run([TRAIN, str(configs['DefaultOptimWrapperConstructor']), '--work-dir',
                   work_dir], tmp_path)
    assert trained.returncode == 0, trained.stderr
    proc = run([TRAIN, str(configs['cmt_mm.MergedGroupsOptimWrapperConstructor']), '--work-dir',
                work_dir, '--resume', '--cfg-options', 'train_cfg.max_epochs=2'], tmp_path)
    line = error_line(proc)
    assert "the checkpoint's optimizer state does not fit the optimizer of the config" in line
    assert 'optim_wrapper.constructor=DefaultOptimWrapperConstructor' in line


def test_test_refuses_a_classifier_checkpoint_for_a_detector(workspace, tmp_path):
    """The detector's neck and head would be evaluated with random weights."""
    coco = tmp_path / 'coco'
    (coco / 'annotations').mkdir(parents=True)
    (coco / 'val2017').mkdir()
    (coco / 'annotations' / 'instances_val2017.json').write_text('{}')
    classifier = OrderedDict((f'backbone.{k}', v) for k, v in CMT('ti').state_dict().items())
    classifier['head.fc.weight'] = torch.zeros(1000, 1280)
    torch.save({'state_dict': classifier}, tmp_path / 'cmt-ti_in1k.pth')
    env = dict(os.environ, COCO_ROOT=f'{coco}/')
    line = error_line(run([TEST, RETINANET, 'cmt-ti_in1k.pth'], tmp_path, env))
    assert "'cmt-ti_in1k.pth' does not fit this RetinaNet" in line
    assert "the checkpoint has no neck, bbox_head: a backbone-only checkpoint belongs in " \
           "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...)" in line


# --------------------------------------------------------------------------------------
# Config values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize('tool, option, expected', [
    (TRAIN, 'model.backbone.arch=l', "invalid config for CMT: unknown CMT arch 'l'; choose one "
     "of ['b', 'base', 'extra-small', 's', 'small', 'ti', 'tiny', 'xs'] or pass a dict"),
    (TRAIN, 'model.backbone.out_indices=5',
     'invalid config for CMT: out_indices must be in 0..3 (or negative), got (5,)'),
    (TRAIN, 'model.backbone.frozen_stages=7',
     'invalid config for CMT: frozen_stages must be in -1..4, got 7'),
    (TEST, 'model.backbone.arch=l', "invalid config for CMT: unknown CMT arch 'l'"),
    (TEST, 'model.backbone.type=NoSuchBackbone',
     'invalid config: NoSuchBackbone is not in the mmpretrain::model registry'),
    # built only in runner.train() / runner.test()
    (TRAIN, 'optim_wrapper.optimizer.lr=-1', 'invalid config for SGD: Invalid learning rate'),
    # looked up by mmengine's optimizer constructor, outside a registry build
    (TRAIN, 'optim_wrapper.optimizer.type=adamw', "invalid config: optim_wrapper.optimizer.type "
     "'adamw' is not a known optimizer; did you mean AdamW"),
    (TEST, 'test_evaluator.type=NoSuchMetric', 'invalid config: NoSuchMetric is not in the'),
])
def test_config_values_the_model_refuses(workspace, tool, option, expected):
    args = [tool, 'cmt_cls.py'] + (['classifier.pth'] if tool == TEST else [])
    line = error_line(run(args + ['--cfg-options', option], workspace))
    assert f'{osp.basename(tool)}: error: {expected}' in line


def test_test_refuses_an_unknown_cfg_option(workspace):
    line = error_line(run([TEST, 'cmt_cls.py', 'classifier.pth', '--cfg-options',
                           'model.backbone.out_indice=3'], workspace))
    assert "'model.backbone.out_indice' does not exist in the config" in line
    assert "did you mean 'out_indices'?" in line


def test_a_bug_in_a_constructor_keeps_its_traceback(workspace, tmp_path):
    (tmp_path / 'buggy_backbone.py').write_text(
        'from mmpretrain.registry import MODELS\n'
        'from cmt_mm.models import CMT\n\n\n'
        '@MODELS.register_module()\n'
        'class BuggyCMT(CMT):\n'
        '    def __init__(self, **kwargs):\n'
        '        super().__init__(**kwargs)\n'
        '        self.missing_attribute.shape\n')
    config = tmp_path / 'buggy.py'
    config.write_text(f"_base_ = [{str(workspace / 'cmt_cls.py')!r}]\n"
                      "custom_imports = dict(imports=['cmt_mm.models', 'buggy_backbone'])\n"
                      "model = dict(backbone=dict(type='BuggyCMT'))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    proc = run([TRAIN, str(config), '--work-dir', str(tmp_path / 'work')], tmp_path, env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' in proc.stderr
    assert "AttributeError: 'BuggyCMT' object has no attribute 'missing_attribute'" in proc.stderr


# --------------------------------------------------------------------------------------
# The helpers, in-process
# --------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def train_tool():
    """tools/train.py imported as a module."""
    return load_tool('tools/train.py')


class Strict:
    """A component whose constructor checks its config values."""

    def __init__(self, depth=1, error=None):
        if error is not None:
            raise error
        if depth < 1:
            raise ValueError(f'depth must be positive, got {depth}')


@pytest.fixture
def registry():
    from mmengine.registry import Registry
    registry = Registry('bad inputs test')
    registry.register_module(module=Strict)
    return registry


def refusal(train_tool, build):
    with pytest.raises(Exception) as err:
        build()
    return train_tool.refused_config_message(err.value)


def test_refused_config_values_are_user_errors(train_tool, registry):
    assert refusal(train_tool, lambda: registry.build(dict(type='Strict', depth=0))) == \
        'invalid config for Strict: depth must be positive, got 0'
    assert refusal(train_tool, lambda: registry.build(dict(type='Strict', dept=1))) == \
        "invalid config for Strict: Strict.__init__() got an unexpected keyword argument 'dept'"
    assert refusal(train_tool, lambda: registry.build(dict(type='Strickt'))).startswith(
        'invalid config: Strickt is not in the')


@pytest.mark.parametrize('error', [AttributeError('x'), KeyError('x'), RuntimeError('x')])
def test_other_errors_in_a_constructor_are_bugs(train_tool, registry, error):
    assert refusal(train_tool, lambda: registry.build(dict(type='Strict', error=error))) is None


def test_errors_outside_a_registry_build_are_bugs(train_tool):
    def not_a_build():
        raise ValueError('x')
    assert refusal(train_tool, not_a_build) is None


def test_load_from_tolerates_resized_classifier_layers(train_tool, workspace):
    from mmengine.config import Config
    cfg = Config.fromfile(str(workspace / 'cmt_cls.py'), import_custom_modules=False)
    cfg.work_dir = str(workspace / 'work')
    assert train_tool.checkpoint_to_load(cfg) is None
    cfg.load_from = str(workspace / 'classifier.pth')
    path, shapes, max_unloaded = train_tool.checkpoint_to_load(cfg)
    assert path == cfg.load_from and 'head.fc.weight' in shapes
    assert max_unloaded == train_tool.LOAD_FROM_MAX_UNLOADED == 0.2
    cfg.resume = True  # resuming needs every weight (and the training state)
    with pytest.raises(ValueError, match='holds no training state'):
        train_tool.checkpoint_to_load(cfg)


def test_cfg_options_fill_values_that_are_none(train_tool):
    from mmengine.config import Config
    cfg = Config(dict(model=dict(backbone=dict(init_cfg=None)), custom_hooks=[None]))
    options = {'model.backbone.init_cfg.checkpoint': 'a.pth', 'custom_hooks.0.type': 'EMAHook',
               'randomness.seed': 0}
    train_tool.check_cfg_options(cfg, options)
    train_tool.replace_none_parents(cfg, options)
    cfg.merge_from_dict(options)
    assert cfg.model.backbone.init_cfg == dict(checkpoint='a.pth')
    assert cfg.custom_hooks == [dict(type='EMAHook')] and cfg.randomness == dict(seed=0)
