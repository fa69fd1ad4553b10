"""The dense backward of CMT's biased attention gives SDPA's gradients, and is chosen only where
the memory-efficient kernel's backward would leave the GPU idle."""
import pytest
import torch
import torch.nn.functional as F

from cmt_mm.models import CMT
from cmt_mm.models.backbones import biased_attention as attention_module
from cmt_mm.models.backbones.biased_attention import (backward_blocks, biased_attention,
                                                      dense_backward_pays)


def inputs(images=3, heads=2, queries=40, keys=6, dims=8, bias_shape=None, dtype=torch.float64):
    torch.manual_seed(0)
    q = torch.randn(images, heads, queries, dims, dtype=dtype, requires_grad=True)
    k = torch.randn(images, heads, keys, dims, dtype=dtype, requires_grad=True)
    v = torch.randn(images, heads, keys, dims, dtype=dtype, requires_grad=True)
    bias = torch.randn(bias_shape or (heads, queries, keys), dtype=dtype, requires_grad=True)
    return q, k, v, bias


def sdpa_and_dense(q, k, v, bias):
    grad_out = torch.randn_like(q)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    expected_grads = torch.autograd.grad(expected, (q, k, v, bias), grad_out)
    out = biased_attention(q, k, v, bias, dense_backward=True)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad_out)
    return (expected, *expected_grads), (out, *grads)


@pytest.mark.parametrize('bias_shape', [None, (1, 2, 40, 6)])
@pytest.mark.parametrize('chunk_elements', [2**28, 2 * 40 * 6])  # one chunk, one per image
def test_dense_backward_gives_the_sdpa_gradients(monkeypatch, bias_shape, chunk_elements):
    monkeypatch.setattr(attention_module, 'DENSE_CHUNK_ELEMENTS', chunk_elements)
    expected, got = sdpa_and_dense(*inputs(bias_shape=bias_shape))
    for name, ref, value in zip(['out', 'q', 'k', 'v', 'bias'], expected, got):
        assert value.shape == ref.shape, name
        torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12, msg=name)


def test_dense_backward_passes_gradcheck():
    q, k, v, bias = inputs(images=2, queries=9, keys=3, dims=4)
    assert torch.autograd.gradcheck(
        lambda *args: biased_attention(*args, dense_backward=True), (q, k, v, bias))


def test_dense_backward_of_low_precision_inputs_computes_in_float32():
    q32, k32, v32, b32 = (t.detach().float().requires_grad_() for t in inputs())
    q, k, v, bias = (t.detach().bfloat16().requires_grad_() for t in (q32, k32, v32, b32))
    grad_out = torch.randn_like(q32)
    expected = torch.autograd.grad(
        F.scaled_dot_product_attention(q32, k32, v32, attn_mask=b32), (q32, k32, v32, b32),
        grad_out)
    grads = torch.autograd.grad(biased_attention(q, k, v, bias, dense_backward=True),
                                (q, k, v, bias), grad_out.bfloat16())
    for ref, grad in zip(expected, grads):
        assert grad.dtype == torch.bfloat16
        # only bfloat16's rounding of the inputs and of the result
        assert ((grad.float() - ref).norm() / ref.norm()).item() < 2e-2


def test_the_dense_backward_is_chosen_only_for_few_gpu_blocks():
    q, k, _, _ = inputs()
    assert not dense_backward_pays(q, k)  # on a CPU SDPA's backward is already dense
    # RetinaNet at 1280x800, batch 2, stage 1: 64,000 queries, 1,000 keys, one head
    assert backward_blocks(torch.empty(2, 1, 64000, 64, device='meta'),
                           torch.empty(2, 1, 1000, 64, device='meta')) == 32
    # CIFAR-10 at 64x64, batch 1,024, stage 1: 256 queries, 4 keys
    assert backward_blocks(torch.empty(1024, 1, 256, 64, device='meta'),
                           torch.empty(1024, 1, 4, 64, device='meta')) == 1024


def test_without_gradients_sdpa_runs_alone(monkeypatch):
    monkeypatch.setattr(attention_module._DenseBackwardAttention, 'apply',
                        lambda *args: pytest.fail('the dense backward was used'))
    q, k, v, bias = inputs()
    with torch.no_grad():
        biased_attention(q, k, v, bias, dense_backward=True)


def test_cmt_trains_with_the_dense_backward_as_with_sdpa(monkeypatch):
    arch = dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], mlp_ratio=2, stem_channels=8)
    x = torch.randn(2, 3, 96, 64, dtype=torch.float64)

    def gradients():
        torch.manual_seed(0)
        model = CMT(arch, pretrain_img_size=64).double()
        model.init_weights()
        sum(out.square().mean() for out in model(x)).backward()
        return {name: p.grad for name, p in model.named_parameters()}

    expected = gradients()
    monkeypatch.setattr(attention_module, 'dense_backward_pays', lambda q, k: True)
    used = []
    apply = attention_module._DenseBackwardAttention.apply
    monkeypatch.setattr(attention_module._DenseBackwardAttention, 'apply',
                        lambda *args: used.append(1) or apply(*args))
    got = gradients()
    assert len(used) == 4  # every block
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-9, atol=1e-12, msg=name)
