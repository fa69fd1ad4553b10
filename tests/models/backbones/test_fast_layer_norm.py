"""FastLayerNorm's Triton kernels give torch's LayerNorm outputs and gradients (on the GPU, and on
the CPU through Triton's interpreter), and the module is a drop-in ``nn.LayerNorm``."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cmt_mm.models import CMT
from cmt_mm.models.backbones.fast_layer_norm import FastLayerNorm, triton, triton_layer_norm

needs_triton = pytest.mark.skipif(triton is None, reason='this torch build has no Triton')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or triton is None,
                                reason='the compiled kernels need a GPU')

# (rows, channels): CMT's widths, one tile and many (the backward programs loop over tiles).
SHAPES = [(37, 46), (2000, 64), (300, 208), (45, 608)]
DTYPES = [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
          (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)]
# Statistics in float32: errors within rounding to each result's dtype, relative to its largest.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def check_against_torch(device):
    """Compare forward and backward with F.layer_norm in float64 for every shape and dtype."""
    for rows, channels in SHAPES:
        for in_dtype, out_dtype in DTYPES:
            torch.manual_seed(rows + channels)
            # An offset and a scale, so that the mean and variance matter.
            x = (torch.randn(rows, channels, device=device) * 3 + 1).to(in_dtype)
            # A non-contiguous view, as a transposed map would give.
            x = x.view(rows, 1, channels).transpose(0, 1)
            weight = torch.randn(channels, device=device)
            bias = torch.randn(channels, device=device)
            grad_y = torch.randn(1, rows, channels, device=device).to(out_dtype)
            leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
            y = triton_layer_norm(*leaves, eps=1e-6, out_dtype=out_dtype)
            grads = torch.autograd.grad(y, leaves, grad_y)
            ref_leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
            ref = F.layer_norm(ref_leaves[0], (channels, ), *ref_leaves[1:], eps=1e-6)
            ref_grads = torch.autograd.grad(ref, ref_leaves, grad_y.double())
            case = f'{rows}x{channels} {in_dtype} -> {out_dtype}'
            assert y.dtype == out_dtype and y.shape == x.shape, case
            assert all(g.dtype == t.dtype for g, t in zip(grads, leaves)), case
            for name, got, expected, dtype in [('y', y, ref, out_dtype),
                                               ('x', grads[0], ref_grads[0], in_dtype),
                                               ('weight', grads[1], ref_grads[1], torch.float32),
                                               ('bias', grads[2], ref_grads[2], torch.float32)]:
                scale = expected.abs().max().item()
                error = (got.double() - expected).abs().max().item()
                limit = TOLERANCE[dtype] * scale
                assert error <= limit, f'{case}: grad {name} off by {error:.3g} (> {limit:.3g})'


@needs_triton
def test_kernels_match_torch_in_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1')
    result = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_cuda
def test_kernels_match_torch_on_the_gpu():
    check_against_torch('cuda')


def test_is_a_layer_norm_with_its_parameters_and_cpu_results():
    torch.manual_seed(0)
    plain = nn.LayerNorm(46, eps=1e-6)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    fast = FastLayerNorm(46, eps=1e-6, autocast_output=True)
    fast.load_state_dict(plain.state_dict())
    assert isinstance(fast, nn.LayerNorm)
    assert fast.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 10, 46)
    torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)


@pytest.mark.parametrize('autocast_output', [False, True])
def test_output_dtype_under_autocast(autocast_output):
    norm = FastLayerNorm(8, autocast_output=autocast_output)
    x = torch.randn(3, 8)
    assert norm(x).dtype == torch.float32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = norm(x)
    # torch's LayerNorm gives float32 under autocast; asked, the norm writes autocast's dtype.
    assert out.dtype == (torch.bfloat16 if autocast_output else torch.float32)
    torch.testing.assert_close(out.float(), F.layer_norm(x, (8, ), norm.weight, norm.bias),
                               rtol=1e-2, atol=1e-2)


@needs_cuda
def test_cmt_on_the_gpu_runs_the_kernels_and_keeps_a_float32_stream(monkeypatch):
    from cmt_mm.models.backbones import fast_layer_norm
    from tiny_models import TINY_ARCH  # not at the top: the interpreter test runs this file alone
    calls = []  # (input dtype, output dtype) of each kernel call
    kernel = fast_layer_norm.triton_layer_norm

    def recording_kernel(x, *args, **kwargs):
        y = kernel(x, *args, **kwargs)
        calls.append((x.dtype, y.dtype))
        return y

    monkeypatch.setattr(fast_layer_norm, 'triton_layer_norm', recording_kernel)
    monkeypatch.setattr(fast_layer_norm, 'TRITON_MIN_ELEMENTS', 0)  # the tiny maps too
    model = CMT(TINY_ARCH, pretrain_img_size=64).cuda()
    model.init_weights()
    x = torch.randn(2, 3, 64, 64, device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        outs = model(x)
    sum(out.float().sum() for out in outs).backward()
    # Per stage: the patch embedding's norm turns its conv's bf16 output into the float32
    # residual stream; each block's two norms read that stream and write bf16 for their layers.
    stage = [(torch.bfloat16, torch.float32)] + [(torch.float32, torch.bfloat16)] * 2
    assert calls == stage * 4
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters()
               if p.requires_grad)


@needs_cuda
def test_small_tensors_run_torchs_layer_norm(monkeypatch):
    from cmt_mm.models.backbones import fast_layer_norm
    sizes = []  # elements of each tensor the Triton kernels normalise
    kernel = fast_layer_norm.triton_layer_norm
    monkeypatch.setattr(fast_layer_norm, 'triton_layer_norm',
                        lambda x, *args: sizes.append(x.numel()) or kernel(x, *args))
    norm = FastLayerNorm(64).cuda()
    rows = fast_layer_norm.TRITON_MIN_ELEMENTS // 64
    small, large = (torch.randn(n, 64, device='cuda') for n in (rows - 1, rows))
    torch.testing.assert_close(norm(small), F.layer_norm(small, (64, ), norm.weight, norm.bias))
    torch.testing.assert_close(norm(large), F.layer_norm(large, (64, ), norm.weight, norm.bias))
    assert sizes == [large.numel()]


if __name__ == '__main__':  # run by the interpreter test, with TRITON_INTERPRET=1
    check_against_torch('cpu')
