"""The classification head of the released CMT models."""
import math
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.heads import ClsHead

from cmt_mm.registry import MODELS


@MODELS.register_module()
class CMTClsHead(ClsHead):
    """1x1 conv to ``hidden_channels``, BatchNorm, Swish, global average pool, dropout, linear.

    Args:
        num_classes (int): number of classes.
        in_channels (int): channels of the last backbone stage.
        hidden_channels (int): width of the 1x1 conv. Defaults to 1280.
        dropout (float): dropout before the classifier (0.1 for CMT-Ti/XS/S, 0.3 for CMT-B).
        **kwargs: passed to :class:`mmpretrain.models.heads.ClsHead` (``loss``, ``topk``, ...).
    """

    def __init__(self, num_classes: int, in_channels: int, hidden_channels: int = 1280,
                 dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_channels, hidden_channels, 1)
        self.norm = nn.BatchNorm2d(hidden_channels)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_channels, num_classes)

    def init_weights(self):
        if self.init_cfg is not None:
            return super().init_weights()
        fan_out = self.conv.out_channels
        nn.init.normal_(self.conv.weight, std=math.sqrt(2.0 / fan_out))
        nn.init.zeros_(self.conv.bias)
        trunc_normal_(self.fc.weight, std=.02)
        nn.init.zeros_(self.fc.bias)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Pooled features of the last stage, before dropout and the classifier."""
        x = self.act(self.norm(self.conv(feats[-1])))
        return x.mean(dim=(2, 3))

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.dropout(self.pre_logits(feats)))
