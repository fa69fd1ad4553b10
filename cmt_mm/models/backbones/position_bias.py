"""Resizing CMT's dense relative position bias to other query and key grids."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def square_grid(num_tokens: int) -> Tuple[int, int]:
    """The (H, W) of a square grid with ``num_tokens`` cells."""
    num_tokens = int(num_tokens)  # a tensor while tracing
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f'a position bias over {num_tokens} tokens is not a square grid')
    return side, side


def _resize_last_grid(x: torch.Tensor, grid: Tuple[int, int],
                      size: Tuple[int, int]) -> torch.Tensor:
    """Bicubically resize the last dim of ``x`` (C, M, H*W), seen as an (H, W) grid."""
    out = F.interpolate(x.reshape(x.shape[0], x.shape[1], *grid), size=size, mode='bicubic',
                        align_corners=False)
    return out.flatten(2)


def resize_position_bias(bias: torch.Tensor,
                         query_hw: Tuple[int, int],
                         key_hw: Tuple[int, int],
                         query_grid: Optional[Tuple[int, int]] = None,
                         key_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resize a ``(heads, Hq0 * Wq0, Hk0 * Wk0)`` bias to other query and key grids.

    The bias is a function of (query position, key position); it is resized bicubically over the
    query grid, then over the key grid. At the original grids it is returned unchanged.

    Args:
        bias: the bias.
        query_hw, key_hw: the target grids.
        query_grid, key_grid: the grids of ``bias``; square by default, as learned.

    Returns:
        Tensor: ``(heads, Hq * Wq, Hk * Wk)``.
    """
    query_hw, key_hw = tuple(query_hw), tuple(key_hw)
    query_grid = tuple(query_grid or square_grid(bias.shape[1]))
    key_grid = tuple(key_grid or square_grid(bias.shape[2]))
    if query_grid != query_hw:
        bias = _resize_last_grid(bias.transpose(1, 2), query_grid, query_hw).transpose(1, 2)
    if key_grid != key_hw:
        bias = _resize_last_grid(bias, key_grid, key_hw)
    return bias


def bias_in_dtype(bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``bias`` cast to ``dtype`` (autocast's, say) for adding to the logits of a softmax.

    A softmax ignores a constant added to each row, so when the cast changes the dtype each row
    is first shifted to have its maximum at 0: a bias beyond float16's range cannot become inf
    (and the attention NaN), and the largest entries, which the softmax weights most, keep the
    most precision. The shift is detached: its gradient sums to nothing through the softmax.
    """
    if bias.dtype == dtype:
        return bias
    return (bias - bias.amax(-1, keepdim=True).detach()).to(dtype)
