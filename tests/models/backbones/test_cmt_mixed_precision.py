"""CMT attention under float16 and bfloat16 autocast: finite, and as close to float32 as the dtype
allows, with large activations and large position biases.

Tolerances are relative (norm of the difference over the norm of the float32 result), in units
of the dtype's machine epsilon: 2^-10 for float16, 2^-7 for bfloat16.
"""
import pytest
import torch
import torch.nn.functional as F

from cmt_mm.models import CMT
from cmt_mm.models.backbones.biased_attention import LowRankBias, biased_attention
from cmt_mm.models.backbones.cmt import LightweightAttention
from cmt_mm.models.backbones.position_bias import (bias_in_dtype, key_resize_matrix,
                                                   resize_query_side)

LOW_PRECISION = [torch.float16, torch.bfloat16]


def relative_error(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def eps(dtype):
    return torch.finfo(dtype).eps


def test_float32_bias_is_passed_unchanged():
    bias = torch.randn(2, 16, 4)
    assert bias_in_dtype(bias, torch.float32) is bias


# (activation scale, bias scale): attention logits up to ~1e9, or biases past float16's range.
# Not combined: a float16 mask cannot hold bias differences beyond 65504, which only matter
# when the logits differ by as much.
SCALES = [(1e3, 1.), (1e4, 10.), (1., 1e3), (1., 1e5)]


@pytest.mark.parametrize('dtype', LOW_PRECISION)
@pytest.mark.parametrize('activation_scale, bias_scale', SCALES)
def test_softmax_with_bias(dtype, activation_scale, bias_scale):
    """The attention step alone, against float64 on the same low-precision q, k and v."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 32) * activation_scale for n in (256, 16, 16))
    bias = torch.randn(2, 256, 16) * bias_scale
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_in_dtype(bias, dtype))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         attn_mask=bias.double())
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert relative_error(out, ref) < eps(dtype)


@pytest.mark.parametrize('dtype', LOW_PRECISION)
@pytest.mark.parametrize('bias_scale', [1., 10., 1e5])
def test_softmax_with_low_rank_bias(dtype, bias_scale):
    """A low-rank bias (CMT's at detection sizes) cast to the dtype, against the float64 dense
    bias: finite past float16's range, and as precise as the dtype for biases of the logits'
    size. Its rounding is relative to the query factor's entries, not to each row's largest
    biases as a dense bias's is, so biases far larger than the logits lose more (measured for
    one draw, bf16: 1.2 eps at bias_scale 100)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 32).to(dtype) for n in (28 * 28, 35, 35))
    query_factor = resize_query_side(torch.randn(2, 14 * 14, 3 * 3) * bias_scale, (28, 28))
    bias = LowRankBias(query_factor,
                       key_resize_matrix((3, 3), (5, 7), torch.device('cpu'), torch.float32))
    dense = bias.query_factor @ bias.key_factor.t()
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                         attn_mask=dense.double())
    out = biased_attention(q, k, v, bias_in_dtype(bias, dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    if bias_scale < 1e3:
        assert relative_error(out, ref) < eps(dtype)


@pytest.mark.parametrize('dtype', LOW_PRECISION)
@pytest.mark.parametrize('activation_scale, bias_scale', [(1e3, 1.), (1e4, 1.), (1e3, 1e3),
                                                          (1., 1e5)])
def test_attention_module_under_autocast(dtype, activation_scale, bias_scale):
    """Large inputs and values; q and k weights shrunk to keep the softmax well-conditioned.

    With logits of 1e6 the softmax is an argmax that any rounding of q and k may flip, so only
    there the float32 result is no fair target (the attention step is tested above).
    """
    torch.manual_seed(0)
    attn = LightweightAttention(64, num_heads=2, sr_ratio=4).eval()
    with torch.no_grad():
        attn.q.weight.div_(activation_scale)
        attn.k.weight.div_(activation_scale)
    x = torch.randn(2, 256, 64) * activation_scale
    bias = torch.randn(2, 256, 16) * bias_scale
    with torch.no_grad():
        ref = attn(x, (16, 16), bias)
        with torch.autocast('cpu', dtype=dtype):
            out = attn(x, (16, 16), bias)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert relative_error(out, ref) < 2 * eps(dtype)


@pytest.mark.parametrize('dtype', LOW_PRECISION)
def test_attention_gradients_under_autocast(dtype):
    torch.manual_seed(0)
    attn = LightweightAttention(64, num_heads=2, sr_ratio=4)
    x = (torch.randn(2, 256, 64) * 1e3).requires_grad_()
    bias = (torch.randn(2, 256, 16) * 1e5).requires_grad_()
    with torch.autocast('cpu', dtype=dtype):
        attn(x, (16, 16), bias).float().square().mean().backward()
    for name, grad in [('x', x.grad), ('bias', bias.grad)] + [
            (name, p.grad) for name, p in attn.named_parameters()]:
        assert grad is not None and torch.isfinite(grad).all(), name


def scaled_cmt(stream_scale, logit_scale, bias_scale):
    """A small CMT in eval mode with norm statistics and activations like a trained model's.

    ``stream_scale`` scales the residual stream (the patch embeddings' affine), ``logit_scale``
    the inputs of q and k (the attention's pre-norm) and ``bias_scale`` the position biases.
    """
    torch.manual_seed(0)
    arch = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 2, 1], mlp_ratio=2, stem_channels=8)
    model = CMT(arch, pretrain_img_size=64)
    model.init_weights()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith('running_var'):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith('running_mean'):
                tensor.normal_(0, 0.2)
        for stage in model.stages:
            stage.patch_embed.norm.weight.mul_(stream_scale)
            stage.patch_embed.norm.bias.normal_().mul_(stream_scale)
            stage.position_bias.mul_(bias_scale)
            for block in stage.blocks:
                block.norm1.weight.mul_(logit_scale)
    return model.eval()


@pytest.mark.parametrize('dtype', LOW_PRECISION)
@pytest.mark.parametrize('stream_scale, logit_scale, bias_scale', [
    (1e3, 10., 1.),  # activations up to ~1e4: float16's range still holds them
    (1., 1., 1e3),
    (1., 1., 1e5),  # past float16's range
])
def test_whole_cmt_under_autocast(dtype, stream_scale, logit_scale, bias_scale):
    model = scaled_cmt(stream_scale, logit_scale, bias_scale)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        refs = model(x)
        with torch.autocast('cpu', dtype=dtype):
            outs = model(x)
    for i, (out, ref) in enumerate(zip(outs, refs)):
        assert torch.isfinite(out).all(), f'stage {i}'
        assert relative_error(out, ref) < 4 * eps(dtype), f'stage {i}'
