"""Checkpoints that are not what the model needs: each is a one-line error naming the file and
what did not match, never a model left (partly) at its random initialisation.

Both ways in: a backbone's ``init_cfg=dict(type='Pretrained', ...)`` (``load_backbone_weights``)
and a whole model loaded by mmengine's Runner (``read_model_checkpoint`` then
``check_model_weights``, as tools/train.py and tools/test.py do).
"""
import os
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from cmt_mm.models import CMT
from cmt_mm.utils.checkpoint import (CheckpointError, check_model_weights, load_backbone_weights,
                                     read_model_checkpoint)
from reference.cmt_released import build_released_cmt
from tiny_models import TINY_ARCH


def small_cmt(**kwargs):
    return CMT(TINY_ARCH, pretrain_img_size=64, **kwargs)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert '\n' not in message, message
    return message


@pytest.fixture(scope='module')
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('valid') / 'cmt.pth'
    torch.save({'state_dict': small_cmt().state_dict()}, path)
    return path


def write_bytes(path, data):
    path.write_bytes(data)
    return path


# name -> (how to make the file from a valid one, what the error must say)
UNREADABLE = {
    'empty': (lambda p, v: write_bytes(p, b''), 'the file is empty'),
    'truncated': (lambda p, v: write_bytes(p, v.read_bytes()[:v.stat().st_size // 2]),
                  'zip archive that is truncated, corrupt'),
    'truncated early': (lambda p, v: write_bytes(p, v.read_bytes()[:5000]),
                        'zip archive that is truncated, corrupt'),
    'corrupt': (lambda p, v: write_bytes(p, b'\0' * 64 + v.read_bytes()[64:]),
                'its format is unknown (truncated or corrupt?)'),
    'text': (lambda p, v: write_bytes(p, b'model = dict(type="CMT")\n'), 'it is a text file'),
    'jpeg': (lambda p, v: write_bytes(p, b'\xff\xd8\xff\xe0\0\x10JFIF\0' + os.urandom(200)),
             'it is a JPEG image'),
    'pickled list': (lambda p, v: write_bytes(p, pickle.dumps([1, 2, 3])),
                     'it is a pickle but not a PyTorch checkpoint'),
    'saved list': (lambda p, v: torch.save([torch.zeros(2)], p), 'holds a list, not a checkpoint'),
    'no tensors': (lambda p, v: torch.save({'epoch': 3, 'note': 'x'}, p),
                   "holds no state dict of tensors (keys: ['epoch', 'note'])"),
    'directory': (lambda p, v: p.mkdir(), 'is a directory, not a file'),
    'missing': (lambda p, v: None, 'does not exist'),
}


@pytest.mark.parametrize('case', list(UNREADABLE))
def test_unreadable_files_in_a_backbone_init_cfg(case, valid_file, tmp_path):
    make, expected = UNREADABLE[case]
    path = tmp_path / 'weights.pth'
    make(path, valid_file)
    backbone = small_cmt(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    message = one_line_error(backbone.init_weights)
    assert repr(str(path)) in message and expected in message


@pytest.mark.parametrize('case', ['truncated early', 'jpeg', 'pickled list', 'directory'])
def test_unreadable_files_as_a_whole_model(case, valid_file, tmp_path):
    make, expected = UNREADABLE[case]
    path = tmp_path / 'model.pth'
    make(path, valid_file)
    message = one_line_error(read_model_checkpoint, str(path))
    assert repr(str(path)) in message and expected in message


def test_another_variant_is_named(tmp_path):
    path = tmp_path / 'ti.pth'
    torch.save(CMT('ti').state_dict(), path)
    message = one_line_error(load_backbone_weights, CMT('xs'), str(path))
    assert "the checkpoint holds CMT arch 'ti' (embed_dims [46, 92, 184, 368]) and the model " \
           'has embed_dims [52, 104, 208, 416]' in message
    assert 'stem.0.conv.weight' not in message  # both stems are 16 wide
    assert 'stages.0.patch_embed.projection.weight: checkpoint (46, 16, 2, 2) vs model ' \
           '(52, 16, 2, 2)' in message


def test_another_model_lists_what_did_not_match(tmp_path):
    resnet = OrderedDict([('conv1.weight', torch.zeros(64, 3, 7, 7)),
                          ('bn1.weight', torch.zeros(64)), ('fc.weight', torch.zeros(10, 512))])
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': resnet}, path)
    message = one_line_error(load_backbone_weights, small_cmt(), str(path))
    assert "0 of its 202 tensors matched; it has none of the backbone's tensor names: is it " \
           'of another model?' in message
    assert 'missing (202; stem 21/21, stages 181/181): stem.0.conv.weight' in message
    assert 'unexpected (3; conv1 1/1, bn1 1/1, fc 1/1): conv1.weight, bn1.weight, ' \
           'fc.weight' in message


def detector_state_dict(backbone):
    weights = OrderedDict((f'backbone.{k}', v) for k, v in backbone.state_dict().items())
    weights['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 16, 1, 1)
    weights['bbox_head.retina_cls.weight'] = torch.zeros(9, 256, 3, 3)
    weights['rpn_head.rpn_conv.weight'] = torch.zeros(256, 256, 3, 3)
    return weights


def test_a_detector_checkpoint_is_not_a_backbone_one(tmp_path):
    source = small_cmt()
    path = tmp_path / 'retinanet.pth'
    torch.save({'state_dict': detector_state_dict(source)}, path)
    message = one_line_error(load_backbone_weights, small_cmt(), str(path))
    assert f"{str(path)!r} is a detector checkpoint (it has bbox_head, rpn_head)" in message
    assert "init_cfg prefix='backbone'" in message

    # Asked for explicitly, its backbone loads.
    target = small_cmt()
    load_backbone_weights(target, str(path), prefix='backbone')
    torch.testing.assert_close(target.state_dict(), source.state_dict())


class Detector(nn.Module):
    """Stands in for an mmdet detector: what matters here are its state-dict key names."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.backbone = small_cmt()
        self.neck = nn.Conv2d(64, 32, 1)
        self.bbox_head = nn.Conv2d(32, num_classes, 3)


def save_model_checkpoint(path, state_dict, **extra):
    torch.save({'state_dict': state_dict, **extra}, path)
    return str(path)


def test_a_whole_model_checkpoint_that_fits(tmp_path):
    model = Detector()
    path = save_model_checkpoint(tmp_path / 'det.pth', model.state_dict())
    match = check_model_weights(Detector(), read_model_checkpoint(path), path)
    assert match == ([], [], [])


def test_a_backbone_checkpoint_for_a_detector(tmp_path):
    """Its neck and head would silently start from random weights."""
    classifier = OrderedDict((f'backbone.{k}', v) for k, v in small_cmt().state_dict().items())
    classifier['head.fc.weight'] = torch.zeros(10, 64)
    path = save_model_checkpoint(tmp_path / 'classifier.pth', classifier)
    shapes = read_model_checkpoint(path)
    detector = Detector()
    total = sum(p.numel() for p in detector.state_dict().values())
    random = sum(p.numel() for p in [*detector.neck.parameters(), *detector.bbox_head.parameters()])
    assert random < 0.1 * total
    # Even when nearly all weights are in the backbone, a whole missing module fails.
    message = one_line_error(check_model_weights, detector, shapes, path, max_unloaded=0.9)
    assert f'{path!r} does not fit this Detector: {random:,} of its {total:,} weights ' \
           f'({random / total:.1%}) would keep their initial values' in message
    assert "the checkpoint has no neck, bbox_head: a backbone-only checkpoint belongs in " \
           "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...)" in message
    assert 'missing (4; neck 2/2, bbox_head 2/2): neck.weight, neck.bias, bbox_head.weight, ' \
           'bbox_head.bias' in message
    assert 'unexpected (1; head 1/1): head.fc.weight' in message


def test_a_bare_backbone_state_dict_for_a_detector(tmp_path):
    path = save_model_checkpoint(tmp_path / 'bare.pth', small_cmt().state_dict())
    message = one_line_error(check_model_weights, Detector(), read_model_checkpoint(path), path)
    assert 'it is a bare backbone state dict' in message


def test_a_detector_of_another_variant(tmp_path):
    model = Detector()
    model.backbone = CMT('ti')
    path = save_model_checkpoint(tmp_path / 'ti.pth', model.state_dict())
    model.backbone = CMT('xs')
    message = one_line_error(check_model_weights, model, read_model_checkpoint(path), path)
    assert "the checkpoint holds CMT arch 'ti'" in message
    assert 'shape mismatches (' in message


def test_resized_classes_are_tolerated_only_when_asked(tmp_path):
    path = save_model_checkpoint(tmp_path / 'det80.pth', Detector(num_classes=80).state_dict())
    shapes = read_model_checkpoint(path)
    message = one_line_error(check_model_weights, Detector(), shapes, path)
    assert 'shape mismatches (2): bbox_head.weight: checkpoint (80, 32, 3, 3) vs model ' \
           '(3, 32, 3, 3), bbox_head.bias: checkpoint (80,) vs model (3,)' in message
    assert "same variant, same classes" in message
    # Fine-tuning on other classes (tools/train.py's load_from): a small fraction may be new.
    match = check_model_weights(Detector(), shapes, path, max_unloaded=0.2)
    assert match.mismatched == ['bbox_head.weight', 'bbox_head.bias']


def test_module_prefix_of_ddp_checkpoints_is_stripped(tmp_path):
    model = Detector()
    path = save_model_checkpoint(
        tmp_path / 'ddp.pth', {f'module.{k}': v for k, v in model.state_dict().items()})
    assert check_model_weights(Detector(), read_model_checkpoint(path), path).missing == []


def test_a_released_file_as_a_whole_model(tmp_path):
    path = tmp_path / 'cmt_tiny.pth'
    torch.save({'model': build_released_cmt('ti').state_dict()}, path)
    message = one_line_error(read_model_checkpoint, str(path))
    assert "is a checkpoint of the authors' CMT code" in message
    assert f'python tools/model_converters/cmt_to_mm.py {path} OUT.pth' in message


def test_resuming_needs_training_state(tmp_path):
    weights = small_cmt().state_dict()
    path = save_model_checkpoint(tmp_path / 'weights.pth', weights, meta=dict(converted_from='x'))
    message = one_line_error(read_model_checkpoint, path, resume=True)
    assert 'holds no training state' in message
    assert f'--cfg-options load_from={path}' in message

    path = save_model_checkpoint(tmp_path / 'epoch_1.pth', weights, meta=dict(epoch=1, iter=8),
                                 message_hub={})
    assert read_model_checkpoint(path, resume=True).keys() == weights.keys()
