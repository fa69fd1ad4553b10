"""Parameter and FLOP counts of CMT models, with and without the attention matrix products.

mmengine's counter (like mmcv's hook counter behind the paper's detection figures) does not see
the products inside ``scaled_dot_product_attention``; the paper's ImageNet figures count them.
Both are reported: the products are added analytically, 2 * Nq * Nk * C multiply-adds per
attention (q @ k^T, then attn @ v). BatchNorm is not counted: at inference it folds into the
convolution before it.
"""
import math
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

from cmt_mm.models.backbones.cmt import LightweightAttention


class Complexity(NamedTuple):
    params: int
    flops: int  # multiply-adds counted by mmengine, without the attention matrix products
    attention_flops: int  # multiply-adds of q @ k^T and attn @ v

    @property
    def flops_with_attention(self) -> int:
        return self.flops + self.attention_flops


class RunAsForward(nn.Module):
    """Make ``run(inputs)`` look like a module's forward, as the tracer needs."""

    def __init__(self, model: nn.Module, run: Callable):
        super().__init__()
        self.model = model
        self.run = run

    def forward(self, inputs):
        return self.run(inputs)


def attention_flops(model: nn.Module, run: Callable, inputs: torch.Tensor) -> int:
    """Multiply-adds of the attention matrix products during ``run(inputs)``."""
    total = 0

    def count(module, args, output):
        nonlocal total
        tokens, hw, _ = args
        batch, num_queries, channels = tokens.shape
        total += 2 * batch * num_queries * math.prod(module.key_grid(hw)) * channels

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, LightweightAttention)]
    try:
        with torch.no_grad():
            run(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total


def model_complexity(model: nn.Module, run: Callable, inputs: torch.Tensor) -> Complexity:
    """Count ``model``'s parameters and the FLOPs of ``run(inputs)`` (``model`` in eval mode)."""
    model.eval()
    analyzer = FlopAnalyzer(RunAsForward(model, run), inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.set_op_handle('aten::batch_norm', lambda inputs, outputs: 0)
    with torch.no_grad():
        flops = analyzer.total()
    params = sum(p.numel() for p in model.parameters())
    return Complexity(params, flops, attention_flops(model, run, inputs))
