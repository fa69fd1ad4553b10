"""CMT's weights cast once per stage under autocast: the same outputs and gradients as
autocast's own casts, with fewer operators.

The cast runs on CUDA only; these tests let it run on the CPU too (``on_cpu``), where bfloat16
autocast casts the same operators as on a GPU (float16 autocast does not: it is tested on a GPU).
"""
import pytest
import torch

from cmt_mm.engine.hooks.compile_hook import repeated_blocks
from cmt_mm.models import CMT
from cmt_mm.models.backbones.cmt import DepthwiseConvWithShortcut
from cmt_mm.models.backbones.weight_cast import (CastWeightsOnce, cast_together,
                                                  cast_weights_once_on)
from cmt_mm.utils.op_count import count_ops
from tiny_models import TINY_ARCH

# Two blocks in stage 2 (the cast serves a stage's blocks); a 2x2 learned key grid, so that 64x96
# inputs take the low-rank bias.
SMALL_ARCH = dict(TINY_ARCH, depths=[1, 2, 1, 1], img_size=64)


@pytest.fixture
def on_cpu():
    with cast_weights_once_on('cpu'):
        yield


def small_cmt(**kwargs):
    torch.manual_seed(0)
    return CMT(arch=SMALL_ARCH, out_indices=(1, 2, 3), **kwargs).train()


def train_step(model, x, dtype=torch.bfloat16):
    """Outputs and parameter gradients of one forward and backward under autocast."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype):
        outs = model(x)
    sum(out.float().square().sum() for out in outs).backward()
    return ([out.detach() for out in outs],
            {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})


def assert_same_step(model, x, monkeypatch):
    outs, grads = train_step(model, x)
    monkeypatch.setattr(CastWeightsOnce, 'device_types', ())  # autocast's own casts
    plain_outs, plain_grads = train_step(model, x)
    for out, plain in zip(outs, plain_outs):
        assert torch.equal(out, plain)
    assert grads.keys() == plain_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.equal(grad, plain_grads[name]), name


def test_cast_together_matches_separate_casts_and_layouts():
    tensors = [
        torch.randn(8, 4, 3, 3).to(memory_format=torch.channels_last),  # a conv's
        torch.randn(6, 1, 3, 3).to(memory_format=torch.channels_last),  # a depthwise conv's
        torch.randn(6, 1, 3, 3),
        torch.randn(5, 7),  # a linear layer's
        torch.randn(5),
    ]
    leaves = [t.requires_grad_() for t in tensors]
    cast = cast_together(leaves, torch.bfloat16)
    for c, t in zip(cast, leaves):
        assert c.dtype == torch.bfloat16 and torch.equal(c, t.to(torch.bfloat16))
        assert c.stride() == t.stride()  # layers choose their output layout by these
    # one flat storage: the cast is one operator
    assert len({c.untyped_storage().data_ptr() for c in cast}) == 1
    sum((c.float() * i).sum() for i, c in enumerate(cast, 1)).backward()
    for i, t in enumerate(leaves, 1):
        torch.testing.assert_close(t.grad, torch.full_like(t, float(i)), rtol=0, atol=0)


def test_cmt_weights_keep_their_strides():
    model = small_cmt()
    for cast_once in [model._stem_cast_once, *model._stages_cast_once]:
        params = [layer._parameters[name] for layer, name in cast_once.parameters]
        for cast, param in zip(cast_together(params, torch.bfloat16), params):
            assert cast.stride() == param.stride()


def test_a_layer_that_computes_with_its_weight_gets_it_float32():
    model = small_cmt()
    cast = {(layer, name) for c in model._stages_cast_once for layer, name in c.parameters}
    block = model.stages[0].blocks[0]
    assert isinstance(block.ffn.dwconv, DepthwiseConvWithShortcut)
    assert (block.ffn.dwconv, 'weight') not in cast  # weight + shortcut, then autocast's cast
    assert (block.ffn.dwconv, 'bias') in cast
    for layer in (block.attn.q, block.ffn.expand.conv, block.local_perception):
        assert {(layer, 'weight'), (layer, 'bias')} <= cast


def test_parameters_stay_what_optimizers_and_hooks_see(on_cpu):
    model = small_cmt()
    before = dict(model.named_parameters())
    seen = []
    layer = model.stages[0].blocks[0].attn.q
    layer.register_forward_hook(lambda m, args, out: seen.append(m.weight.dtype))
    with torch.autocast('cpu', torch.bfloat16):
        model(torch.randn(1, 3, 64, 64))
    assert seen == [torch.bfloat16]  # the cast weight during the call
    assert layer.weight.dtype == torch.float32 and 'weight' not in vars(layer)
    assert dict(model.named_parameters()) == before


def test_training_step_equals_autocasts_own(on_cpu, monkeypatch):
    assert_same_step(small_cmt(), torch.randn(2, 3, 64, 96), monkeypatch)


def test_with_checkpointing_and_frozen_stages(on_cpu, monkeypatch):
    model = small_cmt(with_cp=True, frozen_stages=1)
    assert_same_step(model, torch.randn(2, 3, 64, 64).requires_grad_(), monkeypatch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_cuda_training_step_matches_autocasts_own(dtype, monkeypatch):
    model = small_cmt().cuda()
    x = torch.randn(2, 3, 64, 96, device='cuda')
    outs, grads = train_step(model, x, dtype)
    monkeypatch.setattr(CastWeightsOnce, 'device_types', ())
    plain_outs, plain_grads = train_step(model, x, dtype)
    for out, plain in zip(outs, plain_outs):
        torch.testing.assert_close(out, plain)
    for name, grad in grads.items():  # the same kernels; atomics may sum in another order
        scale = plain_grads[name].abs().max().item()
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-2, atol=1e-3 * scale + 1e-8,
                                   msg=name)


def test_regionally_compiled_blocks_get_the_cast_weights(on_cpu):
    model = small_cmt()
    x = torch.randn(1, 3, 64, 64)
    plain_outs, plain_grads = train_step(model, x)
    for block in repeated_blocks(model):
        block.compile(backend='eager', dynamic=False)
    torch._dynamo.reset()
    outs, grads = train_step(model, x)
    for out, plain in zip(outs, plain_outs):
        assert torch.equal(out, plain)
    for name, grad in grads.items():
        assert torch.equal(grad, plain_grads[name]), name


def test_saves_two_casts_per_cast_parameter(on_cpu, monkeypatch):
    model = small_cmt()
    x = torch.randn(1, 3, 64, 64)
    cast_params = sum(len(c.parameters)
                      for c in [model._stem_cast_once, *model._stages_cast_once])
    once = count_ops(lambda: train_step(model, x)).ops['_to_copy']
    monkeypatch.setattr(CastWeightsOnce, 'device_types', ())
    plain = count_ops(lambda: train_step(model, x)).ops['_to_copy']
    # each parameter: a cast forward and one back; now one each way for each of the 5 groups
    assert plain - once == 2 * cast_params - 2 * 5


def test_runs_only_under_low_precision_autocast(on_cpu, monkeypatch):
    model = small_cmt()
    x = torch.randn(1, 3, 64, 64)

    def concatenations(autocast):
        with torch.autocast('cpu', torch.bfloat16, enabled=autocast):
            return count_ops(lambda: model(x)).ops['cat']

    with_autocast, without = concatenations(True), concatenations(False)
    monkeypatch.setattr(CastWeightsOnce, 'device_types', ())
    assert concatenations(True) == with_autocast - 5  # one for the stem, one per stage
    assert concatenations(False) == without
