"""Float32FocalLoss: mmdet's focal loss, computed in float32 under autocast."""
import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config

from cmt_mm.models.losses import Float32FocalLoss


def logits_and_labels(num=64, classes=5, scale=1.):
    torch.manual_seed(0)
    return torch.randn(num, classes) * scale, torch.randint(0, classes + 1, (num, ))


def test_equals_mmdet_focal_loss_in_float32():
    pred, labels = logits_and_labels()
    torch.testing.assert_close(Float32FocalLoss()(pred, labels, avg_factor=10.),
                               FocalLoss()(pred, labels, avg_factor=10.))


def test_half_logits_give_the_float32_loss_and_gradient():
    pred, labels = logits_and_labels(scale=20.)  # confident logits, where fp16 saturates
    half = pred.half().requires_grad_()
    with torch.autocast('cpu', dtype=torch.float16):
        loss = Float32FocalLoss()(half, labels)
    loss.backward()
    assert loss.dtype == torch.float32
    reference = pred.half().float().requires_grad_()
    expected = FocalLoss()(reference, labels)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(half.grad).all()
    torch.testing.assert_close(half.grad.float(), reference.grad, atol=1e-3, rtol=1e-2)


def test_the_cmt_retinanet_configs_use_it():
    cfg = Config.fromfile('configs/retinanet_cmt_ti_1x_coco.py')
    loss_cfg = cfg.model.bbox_head.loss_cls
    assert loss_cfg.type == 'cmt_mm.Float32FocalLoss'
    loss = MMDET_MODELS.build(loss_cfg)
    assert isinstance(loss, Float32FocalLoss)
    assert (loss.gamma, loss.alpha, loss.use_sigmoid) == (2.0, 0.25, True)
