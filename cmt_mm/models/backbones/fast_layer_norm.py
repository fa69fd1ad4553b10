"""LayerNorm over the channels of each token, with CUDA kernels sized for CMT's narrow rows.

CMT normalises tokens of 46 to 608 channels, millions of them per batch. torch's CUDA LayerNorm
gives each row its own thread block, which at these widths leaves the GPU mostly waiting: on an
H200 its kernels took 13.8 ms of a 55 ms CMT-S inference step (batch 256 at 224, bf16), about
seven times what reading and writing the tokens costs. The Triton kernels here give each program
a tile of many rows, keep the statistics in float32, and in the backward accumulate the weight and
bias gradients per program before one small sum. Measured on an H100 (same step, eager): 65.9 ms
with torch's LayerNorm, 51.6 ms with these kernels (docs/benchmarks.md, session 9).

Launching a Triton kernel from Python costs more than launching torch's, which decides small
tensors: :class:`FastLayerNorm` is an ``nn.LayerNorm`` (same parameters, same checkpoint keys)
that runs the kernels for CUDA tensors of at least :data:`TRITON_MIN_ELEMENTS` elements. Smaller
ones, the CPU, ``torch.compile`` (whose own fused kernels serve) and torch without Triton run
``F.layer_norm``.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from cmt_mm.utils.device import multiprocessor_count

try:
    import triton
    import triton.language as tl
except ImportError:  # torch's CPU-only builds come without Triton
    triton = None

# Elements of a tile per program: rows = TILE_ELEMENTS / (channels rounded up to a power of 2).
TILE_ELEMENTS = 4096
# Backward programs per SM: each loops over its share of the tiles and sums its weight and bias
# gradients in registers, so the partial sums stay few.
BACKWARD_PROGRAMS_PER_SM = 4
# Below this size torch's LayerNorm is the faster: on an H100 (bf16 out, per call, docs/
# benchmarks.md session 12) a forward of 8,000 x 256 took 31.6 us with it and 76.8 us with the
# Triton kernel, one of 128,000 x 64 209 us against 77 us. A RetinaNet CMT-S training step
# (1280 x 800, launch-bound) took 146.2 ms with the Triton kernels for every norm, 133.2 ms
# with torch's.
TRITON_MIN_ELEMENTS = 1 << 22

if triton is not None:

    @triton.jit
    def _forward_kernel(x_ptr, y_ptr, weight_ptr, bias_ptr, mean_ptr, rstd_ptr, rows, channels,
                        eps, BLOCK_ROWS: tl.constexpr, BLOCK_CHANNELS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        col = tl.arange(0, BLOCK_CHANNELS)
        row_in = row < rows
        col_in = col < channels
        inside = row_in[:, None] & col_in[None, :]
        offsets = row[:, None] * channels + col[None, :]
        x = tl.load(x_ptr + offsets, mask=inside, other=0.).to(tl.float32)
        mean = tl.sum(x, axis=1) / channels
        centred = tl.where(inside, x - mean[:, None], 0.)
        rstd = 1 / tl.sqrt(tl.sum(centred * centred, axis=1) / channels + eps)
        weight = tl.load(weight_ptr + col, mask=col_in, other=0.).to(tl.float32)
        bias = tl.load(bias_ptr + col, mask=col_in, other=0.).to(tl.float32)
        y = centred * rstd[:, None] * weight[None, :] + bias[None, :]
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=inside)
        tl.store(mean_ptr + row, mean, mask=row_in)
        tl.store(rstd_ptr + row, rstd, mask=row_in)

    @triton.jit
    def _backward_kernel(x_ptr, grad_y_ptr, grad_x_ptr, weight_ptr, mean_ptr, rstd_ptr,
                         partial_grad_weight_ptr, partial_grad_bias_ptr, rows, channels,
                         BLOCK_ROWS: tl.constexpr, BLOCK_CHANNELS: tl.constexpr):
        program = tl.program_id(0)
        programs = tl.num_programs(0)
        col = tl.arange(0, BLOCK_CHANNELS)
        col_in = col < channels
        weight = tl.load(weight_ptr + col, mask=col_in, other=0.).to(tl.float32)
        grad_weight = tl.zeros((BLOCK_CHANNELS, ), dtype=tl.float32)
        grad_bias = tl.zeros((BLOCK_CHANNELS, ), dtype=tl.float32)
        for first in range(program * BLOCK_ROWS, rows, programs * BLOCK_ROWS):
            row = first + tl.arange(0, BLOCK_ROWS).to(tl.int64)
            row_in = row < rows
            inside = row_in[:, None] & col_in[None, :]
            offsets = row[:, None] * channels + col[None, :]
            x = tl.load(x_ptr + offsets, mask=inside, other=0.).to(tl.float32)
            grad_y = tl.load(grad_y_ptr + offsets, mask=inside, other=0.).to(tl.float32)
            mean = tl.load(mean_ptr + row, mask=row_in, other=0.)
            rstd = tl.load(rstd_ptr + row, mask=row_in, other=0.)
            normed = tl.where(inside, (x - mean[:, None]) * rstd[:, None], 0.)
            grad_normed = grad_y * weight[None, :]
            # d/dx of (x - mean) * rstd: subtract the row means of g and of g * normed * normed.
            mean_grad = tl.sum(grad_normed, axis=1) / channels
            mean_grad_normed = tl.sum(grad_normed * normed, axis=1) / channels
            grad_x = (grad_normed - mean_grad[:, None] - normed * mean_grad_normed[:, None]) \
                * rstd[:, None]
            tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=inside)
            grad_weight += tl.sum(grad_y * normed, axis=0)
            grad_bias += tl.sum(grad_y, axis=0)
        tl.store(partial_grad_weight_ptr + program * channels + col, grad_weight, mask=col_in)
        tl.store(partial_grad_bias_ptr + program * channels + col, grad_bias, mask=col_in)


def _tile(channels: int) -> Tuple[int, int]:
    """Rows and (power-of-2) channels of one program's tile."""
    block_channels = triton.next_power_of_2(channels)
    return max(1, TILE_ELEMENTS // block_channels), block_channels


def _backward_programs(x: torch.Tensor, tiles: int) -> int:
    sms = multiprocessor_count(x.device) if x.is_cuda else 2  # 2: Triton's interpreter (tests)
    return max(1, min(tiles, BACKWARD_PROGRAMS_PER_SM * sms))


class _TritonLayerNorm(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        channels = x.shape[-1]
        x_rows = x.reshape(-1, channels).contiguous()
        rows = x_rows.shape[0]
        y = torch.empty(x_rows.shape, dtype=out_dtype, device=x.device)
        # One allocation for both statistics: eager training is bound by launching ops.
        mean, rstd = torch.empty((2, rows), dtype=torch.float32, device=x.device)
        block_rows, block_channels = _tile(channels)
        _forward_kernel[(triton.cdiv(rows, block_rows), )](
            x_rows, y, weight, bias, mean, rstd, rows, channels, eps,
            BLOCK_ROWS=block_rows, BLOCK_CHANNELS=block_channels)
        ctx.save_for_backward(x_rows, weight, mean, rstd)
        ctx.input_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        x_rows, weight, mean, rstd = ctx.saved_tensors
        rows, channels = x_rows.shape
        grad_y = grad_y.reshape(rows, channels).contiguous()
        grad_x = torch.empty_like(x_rows)
        block_rows, block_channels = _tile(channels)
        programs = _backward_programs(x_rows, triton.cdiv(rows, block_rows))
        # The weight's and the bias's partial sums in one tensor, reduced by one sum.
        partial_grads = x_rows.new_empty((2, programs, channels), dtype=torch.float32)
        _backward_kernel[(programs, )](
            x_rows, grad_y, grad_x, weight, mean, rstd, partial_grads[0], partial_grads[1],
            rows, channels, BLOCK_ROWS=block_rows, BLOCK_CHANNELS=block_channels)
        grad_weight, grad_bias = partial_grads.sum(1).to(weight.dtype)
        return grad_x.view(ctx.input_shape), grad_weight, grad_bias, None, None


def triton_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                      out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """LayerNorm of ``x`` over its last dim by the Triton kernels; the output in ``out_dtype``
    (default: ``x``'s). Statistics and gradients are computed in float32."""
    if triton is None:
        raise RuntimeError('triton_layer_norm needs Triton; install the torch build that ships it '
                           '(any CUDA build of torch) or use F.layer_norm')
    return _TritonLayerNorm.apply(x, weight, bias, eps, out_dtype or x.dtype)


class FastLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dim, by :func:`triton_layer_norm` for CUDA tensors of at
    least :data:`TRITON_MIN_ELEMENTS` elements.

    Args:
        normalized_shape (int): the channels.
        eps (float): added to the variance.
        autocast_output (bool): under autocast, return the autocast dtype rather than float32.
            Right where every consumer casts to it anyway (linear layers, convolutions): the
            output is then written once, at half the size, and the casts disappear.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, autocast_output: bool = False):
        super().__init__(normalized_shape, eps=eps)
        self.autocast_output = autocast_output

    def output_dtype(self, x: torch.Tensor) -> torch.dtype:
        """float32 under autocast (as torch's LayerNorm), or autocast's dtype if asked."""
        if not torch.is_autocast_enabled(x.device.type):
            return x.dtype
        return torch.get_autocast_dtype(x.device.type) if self.autocast_output else torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.output_dtype(x)
        if (x.is_cuda and triton is not None and x.numel() >= TRITON_MIN_ELEMENTS
                and not torch.compiler.is_compiling()):
            return triton_layer_norm(x, self.weight, self.bias, self.eps, dtype)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                            self.eps).to(dtype)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, autocast_output={self.autocast_output}'
