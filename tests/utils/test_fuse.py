"""Folding BatchNorm into convolutions: exact for CMT, and only where it is exact."""
import copy

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn as mmcv_fuse_conv_bn
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from cmt_mm.models import CMT
from cmt_mm.utils.fuse import fold_bn_into_next_conv, fuse_cmt, fuse_conv_bn


def randomise_norms_(model):
    """Norm statistics and affine parameters far from identity, so every fold shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.5)
    return model.eval()


def cmt_ti_classifier():
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='cmt_mm.CMT', arch='ti', out_indices=(3, )),
        head=dict(type='cmt_mm.CMTClsHead', num_classes=10, in_channels=368)))
    model.init_weights()
    return randomise_norms_(model)


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def count_batch_norms(model):
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def test_fused_cmt_classifier_gives_the_same_logits():
    model = cmt_ti_classifier()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = model(x, mode='tensor')
        fused = fuse_conv_bn(copy.deepcopy(model))
        logits = fused(x, mode='tensor')
    assert relative_error(logits, expected) < 1e-5
    # CMT-Ti: 3 stem norms, 3 per block (16) and one per reduction (stages 0-2: 14), the head's.
    assert count_batch_norms(model) == 3 + 3 * 16 + 14 + 1
    # Left: the first two stem norms and each block's FFN expansion norm.
    assert count_batch_norms(fused) == 2 + 16
    assert not fused.training


def test_fused_detection_backbone_gives_the_same_maps():
    backbone = CMT('ti', out_indices=(0, 1, 2, 3))
    backbone.init_weights()
    randomise_norms_(backbone)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        expected = backbone(x)
        outs = fuse_cmt(copy.deepcopy(backbone))(x)
    for out, ref in zip(outs, expected):
        assert relative_error(out, ref) < 1e-5


def test_fusing_twice_changes_nothing():
    model = cmt_ti_classifier()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        once = fuse_conv_bn(model)(x, mode='tensor')
        twice = fuse_conv_bn(model)(x, mode='tensor')
    torch.testing.assert_close(twice, once, rtol=0, atol=0)


def test_other_parts_of_a_model_use_mmcv_and_cmt_stays_exact():
    model = nn.ModuleDict(dict(
        backbone=CMT('ti', out_indices=(3, )),
        neck=nn.Sequential(nn.Conv2d(368, 8, 1), nn.BatchNorm2d(8), nn.ReLU())))
    model.backbone.init_weights()
    randomise_norms_(model)

    def run(m):
        with torch.no_grad():
            return m.neck(m.backbone(torch.randn(1, 3, 64, 64, generator=torch.Generator()
                                                 .manual_seed(1)))[0])

    expected = run(model)
    fused = fuse_conv_bn(copy.deepcopy(model))
    assert isinstance(fused.neck[1], nn.Identity)
    assert relative_error(run(fused), expected) < 1e-5
    # mmcv's generic fusion folds norms through GELU and the FFN shortcut: CMT needs its own.
    assert relative_error(run(mmcv_fuse_conv_bn(copy.deepcopy(model))), expected) > 1e-2


def test_padded_or_grouped_convs_cannot_absorb_the_norm_before_them():
    bn = nn.BatchNorm2d(4).eval()
    with pytest.raises(ValueError, match='unpadded, ungrouped'):
        fold_bn_into_next_conv(bn, nn.Conv2d(4, 4, 3, padding=1))
    with pytest.raises(ValueError, match='unpadded, ungrouped'):
        fold_bn_into_next_conv(bn, nn.Conv2d(4, 4, 1, groups=4))
