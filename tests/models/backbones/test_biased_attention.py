"""CMT's biased attention gives SDPA's outputs and gradients: with the queries split into groups
(only where the backward would leave the GPU idle and, with a low-rank bias, only long query
sequences), and with a low-rank bias appended to the queries' and keys' features."""
import pytest
import torch
import torch.nn.functional as F

from cmt_mm.models import CMT
from cmt_mm.models.backbones import biased_attention as attention_module
from cmt_mm.models.backbones.biased_attention import (LowRankBias, backward_blocks,
                                                      biased_attention, query_groups)
from tiny_models import TINY_ARCH


def inputs(images=3, heads=2, queries=40, keys=6, dims=8, bias_shape=None, dtype=torch.float64):
    torch.manual_seed(0)
    q = torch.randn(images, heads, queries, dims, dtype=dtype, requires_grad=True)
    k = torch.randn(images, heads, keys, dims, dtype=dtype, requires_grad=True)
    v = torch.randn(images, heads, keys, dims, dtype=dtype, requires_grad=True)
    bias = torch.randn(bias_shape or (heads, queries, keys), dtype=dtype, requires_grad=True)
    return q, k, v, bias


def low_rank_inputs(images=3, heads=2, queries=40, keys=6, dims=8, rank=5,
                    dtype=torch.float64):
    q, k, v, _ = inputs(images, heads, queries, keys, dims, dtype=dtype)
    query_factor = torch.randn(heads, queries, rank, dtype=dtype, requires_grad=True)
    key_factor = torch.rand(keys, rank, dtype=dtype).softmax(-1).requires_grad_()
    return q, k, v, LowRankBias(query_factor, key_factor)


def meta(*shape):
    return torch.empty(*shape, device='meta')


@pytest.mark.parametrize('bias_shape', [None, (1, 2, 40, 6), (40, 6)])
@pytest.mark.parametrize('groups', [2, 5, 40])
def test_grouped_queries_give_the_sdpa_outputs_and_gradients(bias_shape, groups):
    q, k, v, bias = inputs(bias_shape=bias_shape)
    grad_out = torch.randn_like(q)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    expected_grads = torch.autograd.grad(expected, (q, k, v, bias), grad_out)
    out = biased_attention(q, k, v, bias, groups=groups)
    grads = torch.autograd.grad(out, (q, k, v, bias), grad_out)
    for name, ref, value in zip(['out', 'q', 'k', 'v', 'bias'], (expected, *expected_grads),
                                (out, *grads)):
        assert value.shape == ref.shape, name
        torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12, msg=name)


def test_grouped_queries_pass_gradcheck():
    q, k, v, bias = inputs(images=2, queries=9, keys=3, dims=4)
    assert torch.autograd.gradcheck(lambda *args: biased_attention(*args, groups=3),
                                    (q, k, v, bias))


def test_groups_that_do_not_divide_the_queries_are_an_error():
    with pytest.raises(ValueError, match='40 queries do not split into 3 groups'):
        biased_attention(*inputs(), groups=3)


def test_groups_fill_the_gpu_only_where_the_backward_would_not():
    h100_sms = 132
    # RetinaNet at 1280x800, batch 2: stages 1-4 have 64,000 / 16,000 / 4,000 / 1,000 queries
    # against 1,000 keys with 1 / 2 / 4 / 8 heads.
    stage_1 = meta(2, 1, 64000, 64), meta(2, 1, 1000, 64)
    assert backward_blocks(*stage_1) == 32
    assert query_groups(*stage_1, sms=h100_sms) == 10  # 320 blocks
    assert query_groups(meta(2, 2, 16000, 64), meta(2, 2, 1000, 64), sms=h100_sms) == 5
    assert query_groups(meta(2, 4, 4000, 64), meta(2, 4, 1000, 64), sms=h100_sms) == 4
    assert query_groups(meta(2, 8, 1000, 64), meta(2, 8, 1000, 64), sms=h100_sms) == 2
    # CIFAR-10 at 64x64, batch 1,024, stage 1: 256 queries, 4 keys: 1,024 blocks already
    assert query_groups(meta(1024, 1, 256, 64), meta(1024, 1, 4, 64), sms=h100_sms) == 1
    # A prime number of queries cannot split; small groups are not worth it.
    assert query_groups(meta(1, 1, 7919, 64), meta(1, 1, 100, 64), sms=h100_sms) == 1
    assert query_groups(meta(1, 1, 128, 64), meta(1, 1, 4, 64), sms=h100_sms) == 2
    # One block needs 264 groups; groups keep 64 queries at least, and divide the queries.
    assert query_groups(meta(1, 1, 64 * 49, 64), meta(1, 1, 64, 64), sms=h100_sms) == 49
    assert query_groups(meta(1, 1, 2 * 7919, 64), meta(1, 1, 64, 64), sms=h100_sms) == 2
    # On a CPU SDPA's backward is already dense.
    q, k, _, _ = inputs()
    assert query_groups(q, k) == 1


def test_a_low_rank_bias_splits_only_long_query_sequences():
    h100_sms = 132
    # The same RetinaNet stages with the low-rank bias (flash kernels): stage 1 alone splits.
    assert query_groups(meta(2, 1, 64000, 64), meta(2, 1, 1000, 64), sms=h100_sms,
                        low_rank=True) == 10
    for heads, queries in [(2, 16000), (4, 4000), (8, 1000)]:
        q, k = meta(2, heads, queries, 64), meta(2, heads, 1000, 64)
        assert query_groups(q, k, sms=h100_sms) > 1
        assert query_groups(q, k, sms=h100_sms, low_rank=True) == 1
    threshold = attention_module.LOW_RANK_MIN_QUERIES_TO_SPLIT
    assert query_groups(meta(1, 1, threshold, 64), meta(1, 1, 64, 64), sms=h100_sms,
                        low_rank=True) > 1
    assert query_groups(meta(1, 1, threshold - 64, 64), meta(1, 1, 64, 64), sms=h100_sms,
                        low_rank=True) == 1


def test_biased_attention_asks_for_groups_by_its_bias_form(monkeypatch):
    asked = []
    monkeypatch.setattr(attention_module, 'query_groups',
                        lambda q, k, low_rank: asked.append(low_rank) or 1)
    biased_attention(*inputs())
    biased_attention(*low_rank_inputs())
    assert asked == [False, True]


def test_without_gradients_the_queries_stay_together(monkeypatch):
    monkeypatch.setattr(attention_module, 'query_groups',
                        lambda *args: pytest.fail('groups were chosen for inference'))
    q, k, v, bias = inputs()
    with torch.no_grad():
        torch.testing.assert_close(biased_attention(q, k, v, bias),
                                   F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


def test_cmt_trains_with_grouped_queries_as_without(monkeypatch):
    x = torch.randn(2, 3, 96, 64, dtype=torch.float64)

    def gradients():
        torch.manual_seed(0)
        model = CMT(TINY_ARCH, pretrain_img_size=64).double()
        model.init_weights()
        sum(out.square().mean() for out in model(x)).backward()
        return {name: p.grad for name, p in model.named_parameters()}

    expected = gradients()
    chosen = []
    # Stages 1-4 have 384, 96, 24 and 6 queries at 96x64.
    monkeypatch.setattr(attention_module, 'query_groups',
                        lambda q, k, low_rank: chosen.append(q.shape[-2]) or 2)
    got = gradients()
    assert chosen == [384, 96, 24, 6]  # every block
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize('groups', [1, 4, None])
@pytest.mark.parametrize('dims, rank', [(8, 5), (6, 9)])
def test_low_rank_bias_gives_the_dense_bias_outputs_and_gradients(groups, dims, rank):
    q, k, v, bias = low_rank_inputs(dims=dims, rank=rank)
    grad_out = torch.randn_like(q)
    inputs_ = (q, k, v, *bias)
    dense = bias.query_factor @ bias.key_factor.t()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    expected_grads = torch.autograd.grad(expected, inputs_, grad_out)
    out = biased_attention(q, k, v, bias, groups=groups)
    grads = torch.autograd.grad(out, inputs_, grad_out)
    names = ['out', 'q', 'k', 'v', 'query_factor', 'key_factor']
    for name, ref, value in zip(names, (expected, *expected_grads), (out, *grads)):
        assert value.shape == ref.shape, name
        torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12, msg=name)


def test_an_aligned_low_rank_bias_is_the_same_bias_and_spares_attention_its_padding():
    from cmt_mm.utils.op_count import count_ops
    q, k, v, bias = low_rank_inputs(dims=8, rank=5)
    aligned = bias.aligned(8)
    assert aligned.query_factor.shape[-1] == aligned.key_factor.shape[-1] == 8
    assert aligned.aligned(8) is aligned and bias.aligned(3) is bias  # 3 + 5 = 8 already
    torch.testing.assert_close(aligned.query_factor @ aligned.key_factor.t(),
                               bias.query_factor @ bias.key_factor.t())
    assert torch.equal(biased_attention(q, k, v, aligned, groups=1),
                       biased_attention(q, k, v, bias, groups=1))
    pads = [count_ops(lambda: biased_attention(q, k, v, b, groups=1)).ops['constant_pad_nd']
            for b in (bias, aligned)]
    assert pads == [3, 1]  # the factors' two and the values', then the values' only


def test_cmt_stages_align_their_low_rank_bias_once_for_all_blocks():
    model = CMT(TINY_ARCH, pretrain_img_size=64)  # a 2x2 learned key grid
    for stage in model.stages:
        bias = stage.resized_position_bias((16, 24), (3, 5))
        assert isinstance(bias, LowRankBias)
        assert (stage.head_dims + bias.key_factor.shape[-1]) % 8 == 0


def test_low_rank_bias_passes_gradcheck():
    q, k, v, bias = low_rank_inputs(images=2, queries=9, keys=3, dims=4, rank=2)
    assert torch.autograd.gradcheck(
        lambda q, k, v, *factors: biased_attention(q, k, v, LowRankBias(*factors), groups=3),
        (q, k, v, *bias))


def test_low_rank_bias_runs_sdpa_without_a_mask_on_heads_of_a_multiple_of_8(monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        seen.append((q.shape[-1], k.shape[-1], v.shape[-1], attn_mask))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_module.F, 'scaled_dot_product_attention', spy)
    q, k, v, bias = low_rank_inputs(dims=64, rank=49)
    assert biased_attention(q, k, v, bias).shape == q.shape
    assert seen == [(120, 120, 120, None)]  # 64 + 49 features, padded to 120


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the memory-efficient kernel needs a GPU')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_grouped_queries_match_on_the_gpu_kernel(dtype):
    # RetinaNet's stage 1 at 640x400: 16,000 queries, 250 keys (its rows padded to 256).
    q, k, v = (torch.randn(2, 1, n, 64, device='cuda', dtype=dtype, requires_grad=True)
               for n in (16000, 250, 250))
    bias = torch.randn(1, 16000, 256, device='cuda', dtype=dtype)[..., :250].requires_grad_()
    grad_out = torch.randn_like(q)
    assert query_groups(q, k) > 1
    results = []
    for groups in (1, None):
        out = biased_attention(q, k, v, bias, groups=groups)
        results.append((out, *torch.autograd.grad(out, (q, k, v, bias), grad_out)))
    # The keys' and values' gradients are sums of the groups' gradients, each rounded to dtype.
    limit = 1e-5 if dtype == torch.float32 else 1e-2
    for name, ref, value in zip(['out', 'q', 'k', 'v', 'bias'], *results):
        error = ((value.float() - ref.float()).norm() / ref.float().norm()).item()
        assert error < limit, f'{name}: relative error {error:.2g}'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the flash kernel needs a GPU')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('groups', [None, 5])  # None: too few queries to split
def test_low_rank_bias_runs_on_the_flash_kernel_as_the_dense_bias(dtype, groups):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # RetinaNet's stage 1 at 640x400, CMT-S (a 7x7 learned key grid): 16,000 queries, 250 keys.
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, n, 64, device='cuda', dtype=dtype, requires_grad=True)
               for n in (16000, 250, 250))
    query_factor = torch.randn(1, 16000, 49, device='cuda', requires_grad=True)
    key_factor = torch.rand(250, 49, device='cuda').softmax(-1)
    dense = (query_factor @ key_factor.t()).to(dtype)
    bias = LowRankBias(query_factor.to(dtype), key_factor.to(dtype))
    grad_out = torch.randn_like(q)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    ref_grads = torch.autograd.grad(ref, (q, k, v, query_factor), grad_out)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # an error if flash cannot run it
        out = biased_attention(q, k, v, bias, groups=groups)
    grads = torch.autograd.grad(out, (q, k, v, query_factor), grad_out)
    for name, value, expected in zip(['out', 'q', 'k', 'v', 'query_factor'], (out, *grads),
                                     (ref, *ref_grads)):
        error = ((value.float() - expected.float()).norm() / expected.float().norm()).item()
        assert error < 2e-2, f'{name}: relative error {error:.2g}'
