"""Resizing CMT's dense relative position bias to other query and key grids."""
import functools
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


@functools.lru_cache(maxsize=256)
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


def resize_position_bias(bias: torch.Tensor,
                         query_hw: Tuple[int, int],
                         key_hw: Tuple[int, int],
                         query_grid: Optional[Tuple[int, int]] = None,
                         key_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Resize a ``(heads, Hq0 * Wq0, Hk0 * Wk0)`` bias to other query and key grids.

    The bias is a function of (query position, key position); it is resized bicubically over the
    query grid, then over the key grid, as ``F.interpolate(mode='bicubic')`` would. Bicubic
    resizing is linear and separable, so it is done by matmuls with interpolation matrices: their
    backward is GEMMs too, where that of ``F.interpolate`` on CUDA scatters millions of gradients
    into a few inputs with contended atomics. The key side comes last, one matmul with the
    Kronecker product of its small matrices, so the large result is written once. It runs in the
    bias's dtype, under autocast too. At the original grids the bias is returned unchanged.

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
    heads, num_keys = bias.shape[0], bias.shape[2]

    def matrix(n_in, n_out):
        # torch.compile traces the matrices into its graph: it would bypass the cache anyway.
        make = _bicubic_matrix.__wrapped__ if torch.compiler.is_compiling() else _bicubic_matrix
        return make(n_in, n_out, bias.device, bias.dtype)

    with torch.autocast(bias.device.type, enabled=False):
        if query_grid != query_hw:
            # Over query rows, then query columns: (heads, Hq0, Wq0 * Nk) -> (heads, Hq, Wq, Nk).
            bias = matrix(query_grid[0], query_hw[0]) @ bias.reshape(heads, query_grid[0], -1)
            bias = matrix(query_grid[1], query_hw[1]) @ bias.reshape(
                heads, query_hw[0], query_grid[1], num_keys)
            bias = bias.reshape(heads, -1, num_keys)
        if key_grid != key_hw:
            bias = bias @ torch.kron(matrix(key_grid[0], key_hw[0]),
                                     matrix(key_grid[1], key_hw[1])).t()
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
