"""Sigmoid focal loss in float32, so that fp16 mixed precision cannot overflow it."""
import torch
from mmdet.models.losses import FocalLoss

from cmt_mm.registry import MODELS


@MODELS.register_module()
class Float32FocalLoss(FocalLoss):
    """mmdet's sigmoid focal loss, computed in float32 whatever the logits' dtype.

    mmcv's CUDA kernel computes in the dtype of its input. Under fp16 autocast the sigmoid of
    a logit above ~8 rounds to 1 and the log of its complement is -inf, so the classification
    loss turns NaN once training makes the logits confident (a COCO128 RetinaNet CMT-S run with
    ``--amp`` did so from its seventh epoch). The loss is a small part of a step, so float32
    costs little. In float32 training it is mmdet's FocalLoss.
    """

    def forward(self, pred: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return super().forward(pred.float(), *args, **kwargs)
