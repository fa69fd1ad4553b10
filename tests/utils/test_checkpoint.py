"""Loading released, converted and plain CMT checkpoints, and refusing the wrong ones."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS

from cmt_mm.models import CMT
from cmt_mm.models.backbones.position_bias import resize_position_bias
from cmt_mm.utils.checkpoint import (CheckpointError, convert_released_cmt, load_backbone_weights,
                                     missing_pretrained_checkpoints)
from reference.cmt_released import build_released_cmt

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {v: REPO / f'configs/cmt/cmt-{v}_8xb128_in1k.py' for v in ('ti', 'xs', 's', 'b')}
NATIVE_SIZE = {'ti': 160, 'xs': 192, 's': 224, 'b': 256}


def randomise_(model):
    """Random values everywhere, norm statistics included, so no mix-up can hide."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('num_batches_tracked'):
                continue
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith(('weight', 'running_mean', 'bias')) and tensor.ndim == 1:
                tensor.uniform_(-0.5, 1.5) if name.endswith('weight') else tensor.normal_(0, .2)
    return model.eval()


@pytest.fixture(scope='module')
def released_ti(tmp_path_factory):
    """A CMT-Ti with random weights in the authors' model and file format."""
    model = randomise_(build_released_cmt('ti'))
    path = tmp_path_factory.mktemp('released') / 'cmt_tiny.pth'
    torch.save({'model': model.state_dict()}, path)
    return model, path


def build_classifier(variant):
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(CONFIGS[variant]).model)
    return model.eval()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def convert_with_tool(src, dst):
    subprocess.run([sys.executable, str(REPO / 'tools/model_converters/cmt_to_mm.py'), str(src),
                    str(dst)], check=True, capture_output=True, text=True)


@pytest.mark.parametrize('variant', ['ti', 's'])
def test_converted_classifier_matches_the_released_model(variant, tmp_path):
    released = randomise_(build_released_cmt(variant))
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save({'model': released.state_dict()}, src)
    convert_with_tool(src, dst)
    classifier = build_classifier(variant)
    load_checkpoint(classifier, str(dst), strict=True)
    x = torch.randn(2, 3, NATIVE_SIZE[variant], NATIVE_SIZE[variant])
    with torch.no_grad():
        expected = released(x)
        logits = classifier(x, mode='tensor')
    assert relative_error(logits, expected) < 1e-4


def test_converter_rejects_foreign_keys():
    with pytest.raises(CheckpointError, match='not part of a released CMT'):
        convert_released_cmt({'stem_conv1.weight': torch.zeros(1), 'fc.weight': torch.zeros(1)})


def test_converter_tool_rejects_a_non_released_file(tmp_path):
    src = tmp_path / 'plain.pth'
    torch.save({'state_dict': CMT('ti').state_dict()}, src)
    result = subprocess.run([sys.executable, str(REPO / 'tools/model_converters/cmt_to_mm.py'),
                             str(src), str(tmp_path / 'out.pth')], capture_output=True, text=True)
    assert result.returncode != 0
    assert 'does not have the key names of a released CMT' in result.stderr
    assert 'Traceback' not in result.stderr


def backbone_features(backbone, x):
    with torch.no_grad():
        return backbone.eval()(x)


def test_init_cfg_loads_the_released_file(released_ti):
    released, path = released_ti
    backbone = CMT('ti', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        expected = released.forward_features(x)
    torch.testing.assert_close(backbone_features(backbone, x)[-1], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('with_prefix', [True, False])
def test_round_trip_of_our_format(tmp_path, with_prefix):
    source = randomise_(CMT('ti'))
    prefix = 'backbone.' if with_prefix else ''
    path = tmp_path / 'ours.pth'
    torch.save({'state_dict': {prefix + k: v for k, v in source.state_dict().items()}}, path)
    target = CMT('ti', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    target.init_weights()
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)


def test_converted_classifier_file_loads_into_a_detection_backbone(released_ti, tmp_path):
    released, src = released_ti
    dst = tmp_path / 'converted.pth'
    convert_with_tool(src, dst)
    backbone = CMT('ti', out_indices=(1, 2, 3), init_cfg=dict(type='Pretrained',
                                                                checkpoint=str(dst)))
    backbone.init_weights()
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        expected = released.forward_features(x)
    torch.testing.assert_close(backbone_features(backbone, x)[-1], expected, rtol=1e-4, atol=1e-4)


def test_loading_at_another_resolution(released_ti):
    _, path = released_ti
    backbone = CMT('ti', pretrain_img_size=224,
                   init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    assert backbone.stages[0].position_bias.shape == (1, 56 * 56, 7 * 7)
    native = CMT('ti', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    native.init_weights()
    # The resized bias equals resizing the native one as the model does at run time.
    torch.testing.assert_close(
        backbone.stages[0].position_bias,
        resize_position_bias(native.stages[0].position_bias, (56, 56), (7, 7)).detach())


def test_wrong_variant_is_an_error_naming_the_mismatches(released_ti):
    _, path = released_ti
    backbone = CMT('s', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointError) as err:
        backbone.init_weights()
    message = str(err.value)
    assert str(path) in message and 'shape mismatches' in message
    assert 'stem.0.conv.weight: checkpoint (16, 3, 3, 3) vs model (32, 3, 3, 3)' in message


def test_a_file_of_another_model_is_an_error(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}}, path)
    with pytest.raises(CheckpointError, match='0 of its 699 tensors matched'):
        load_backbone_weights(CMT('ti'), str(path))


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match='nope.pth.*does not exist'):
        load_backbone_weights(CMT('ti'), str(tmp_path / 'nope.pth'))


def test_missing_pretrained_checkpoints_of_a_detection_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped checkpoints/cmt-ti_in1k.pth is relative
    cfg = Config.fromfile(str(REPO / 'configs/mask_rcnn_cmt_ti_1x_coco.py'),
                          import_custom_modules=False)
    assert missing_pretrained_checkpoints(cfg.model) == [
        ('model.backbone.init_cfg.checkpoint', 'checkpoints/cmt-ti_in1k.pth', 'cmt_mm.CMT')]

    (tmp_path / 'checkpoints').mkdir()
    (tmp_path / 'checkpoints' / 'cmt-ti_in1k.pth').write_bytes(b'')
    assert missing_pretrained_checkpoints(cfg.model) == []


def test_missing_pretrained_checkpoints_anywhere_in_a_model(tmp_path):
    present = tmp_path / 'present.pth'
    present.write_bytes(b'')
    model = dict(
        type='Detector',
        backbone=dict(type='ResNet',
                      init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
        neck=[dict(type='FPN', init_cfg=[
            dict(type='Xavier', layer='Conv2d'),
            dict(type='Pretrained', checkpoint=str(tmp_path / 'neck.pth'))])],
        head=dict(type='Head', init_cfg=dict(type='Pretrained', checkpoint=str(present))))
    assert missing_pretrained_checkpoints(model) == [
        ('model.neck.0.init_cfg.1.checkpoint', str(tmp_path / 'neck.pth'), 'FPN')]
