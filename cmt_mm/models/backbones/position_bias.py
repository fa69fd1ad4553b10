"""Resizing CMT's relative position bias to other query and key grids, and casting it."""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from cmt_mm.utils.cache import cache_outside_compile
from .biased_attention import LowRankBias


def square_grid(num_tokens: int) -> Tuple[int, int]:
    """The (H, W) of a square grid with ``num_tokens`` cells."""
    num_tokens = int(num_tokens)  # a tensor while tracing
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f'a position bias over {num_tokens} tokens is not a square grid')
    return side, side


# torch.compile traces the matrices into its graph, so it bypasses the cache.
@cache_outside_compile(maxsize=256)
def _bicubic_matrix(n_in: int, n_out: int, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D bicubic resizing (``align_corners=False``).

    ``F.interpolate`` of the identity, in float64: exactly PyTorch's resize, as a constant.
    Made outside inference mode, so that a matrix cached there can serve autograd later.
    """
    with torch.inference_mode(False):
        eye = torch.eye(n_in, dtype=torch.float64, device=device).reshape(n_in, 1, n_in, 1)
        cols = F.interpolate(eye, size=(n_out, 1), mode='bicubic', align_corners=False)
        return cols.reshape(n_in, n_out).t().to(dtype)


def resize_query_side(bias: torch.Tensor,
                      query_hw: Tuple[int, int],
                      query_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resize a ``(heads, Hq0 * Wq0, keys)`` bias bicubically to another query grid.

    Over query rows, then query columns, as matmuls with interpolation matrices: their backward
    is GEMMs too, where that of ``F.interpolate`` on CUDA scatters millions of gradients into a
    few inputs with contended atomics. Runs in the bias's dtype, under autocast too.
    """
    query_hw = tuple(query_hw)
    query_grid = tuple(query_grid or square_grid(bias.shape[1]))
    if query_grid == query_hw:
        return bias
    heads, num_keys = bias.shape[0], bias.shape[2]
    with torch.autocast(bias.device.type, enabled=False):
        # (heads, Hq0, Wq0 * keys) -> (heads, Hq, Wq0, keys) -> (heads, Hq, Wq, keys)
        rows = _bicubic_matrix(query_grid[0], query_hw[0], bias.device, bias.dtype)
        bias = rows @ bias.reshape(heads, query_grid[0], -1)
        cols = _bicubic_matrix(query_grid[1], query_hw[1], bias.device, bias.dtype)
        bias = cols @ bias.reshape(heads, query_hw[0], query_grid[1], num_keys)
    return bias.reshape(heads, -1, num_keys)


def key_resize_matrix(key_grid: Tuple[int, int], key_hw: Tuple[int, int],
                      device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``(Hk * Wk, Hk0 * Wk0)`` matrix of bicubic resizing from ``key_grid`` to ``key_hw``.

    The Kronecker product of the row and column matrices: a bias resized over its keys is
    ``bias @ key_resize_matrix(...).t()``. Made in float64, then cast to ``dtype``.
    """
    rows = _bicubic_matrix(key_grid[0], key_hw[0], device, torch.float64)
    cols = _bicubic_matrix(key_grid[1], key_hw[1], device, torch.float64)
    return torch.kron(rows, cols).to(dtype)


def resize_position_bias(bias: torch.Tensor,
                         query_hw: Tuple[int, int],
                         key_hw: Tuple[int, int],
                         query_grid: Optional[Tuple[int, int]] = None,
                         key_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resize a ``(heads, Hq0 * Wq0, Hk0 * Wk0)`` bias to other query and key grids.

    The bias is a function of (query position, key position); it is resized bicubically over the
    query grid (:func:`resize_query_side`), then over the key grid, as
    ``F.interpolate(mode='bicubic')`` would. Bicubic resizing is linear and separable: the key
    side is one matmul with :func:`key_resize_matrix`, last, so the large result is written once.
    It runs in the bias's dtype, under autocast too. At the original grids the bias is returned
    unchanged.

    Args:
        bias: the bias.
        query_hw, key_hw: the target grids.
        query_grid, key_grid: the grids of ``bias``; square by default, as learned.

    Returns:
        Tensor: ``(heads, Hq * Wq, Hk * Wk)``.
    """
    key_hw = tuple(key_hw)
    key_grid = tuple(key_grid or square_grid(bias.shape[2]))
    bias = resize_query_side(bias, query_hw, query_grid)
    if key_grid != key_hw:
        with torch.autocast(bias.device.type, enabled=False):
            bias = bias @ key_resize_matrix(key_grid, key_hw, bias.device, bias.dtype).t()
    return bias


def low_rank_position_bias(bias: torch.Tensor,
                           query_hw: Tuple[int, int],
                           key_hw: Tuple[int, int]) -> LowRankBias:
    """:func:`resize_position_bias` of a learned (square-grid) bias as its two factors: the bias
    resized over the queries only, and the key resize matrix. Their product is the resized
    bias; the rank is the learned grid's number of keys, whatever ``key_hw``."""
    return LowRankBias(resize_query_side(bias, query_hw),
                       key_resize_matrix(square_grid(bias.shape[2]), key_hw, bias.device,
                                         bias.dtype))


# Casting a LowRankBias moves this factor from its query factor to its key factor: the query
# factor then holds biases up to 64 * 65504 in float16, and a power of 2 keeps products exact.
QUERY_FACTOR_DOWNSCALE = 64


def bias_in_dtype(bias: Union[torch.Tensor, LowRankBias],
                  dtype: torch.dtype) -> Union[torch.Tensor, LowRankBias]:
    """``bias`` cast to ``dtype`` (autocast's, say) for adding to the logits of a softmax.

    A softmax ignores a constant added to each row, so when the cast changes the dtype each row
    is first shifted to have its maximum at 0: a bias beyond float16's range cannot become inf
    (and the attention NaN), and the largest entries, which the softmax weights most, keep the
    most precision. The shift is detached: its gradient sums to nothing through the softmax.

    A :class:`LowRankBias` has its query factor's rows shifted so: its key factor's rows sum to
    1, so every entry of the bias's row moves as much.
    """
    if isinstance(bias, LowRankBias):
        if bias.query_factor.dtype == dtype:
            return bias
        return LowRankBias((_shift_rows(bias.query_factor) / QUERY_FACTOR_DOWNSCALE).to(dtype),
                           (bias.key_factor * QUERY_FACTOR_DOWNSCALE).to(dtype))
    if bias.dtype == dtype:
        return bias
    return _shift_rows(bias).to(dtype)


def _shift_rows(bias: torch.Tensor) -> torch.Tensor:
    return bias - bias.amax(-1, keepdim=True).detach()
