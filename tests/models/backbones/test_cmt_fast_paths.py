"""CMT's faster paths give the plain path's outputs: channels_last, torch.compile, the bias
resized once per stage in the attention dtype and aligned for SDPA, the low-rank bias above the
learned key grid, 1x1 convs as matmuls, the FFN's shortcut folded into its depthwise conv."""
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from tiny_models import TINY_ARCH as ONE_BLOCK_PER_STAGE

from cmt_mm.models import CMT
from cmt_mm.models.backbones import cmt as cmt_module
from cmt_mm.models.backbones.biased_attention import LowRankBias

# Two blocks in stage 2: the blocks of a stage share its resized bias.
TINY_ARCH = dict(ONE_BLOCK_PER_STAGE, depths=[1, 2, 1, 1])
# Compiling takes time per operation: one block per stage.
COMPILE_ARCH = ONE_BLOCK_PER_STAGE


def tiny(arch=TINY_ARCH, **kwargs):
    torch.manual_seed(0)
    model = CMT(arch, pretrain_img_size=64, **kwargs)
    model.init_weights()
    return model


def assert_outputs_close(outs, expected, rtol=1e-5):
    for out, ref in zip(outs, expected):
        assert ((out - ref).norm() / ref.norm()).item() < rtol


def test_channels_last_gives_the_same_outputs():
    model = tiny().eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        outs = model(x.contiguous(memory_format=torch.channels_last))
    assert_outputs_close(outs, expected)
    assert all(out.is_contiguous() for out in outs)  # NCHW for mmcv's ops, whatever the input


def test_maps_stay_channels_last_so_tokens_need_no_copies():
    model = tiny(out_indices=(3, )).eval()
    layouts = []

    def record(module, args, output):
        layouts.append((type(module).__name__, output.is_contiguous(
            memory_format=torch.channels_last) if output.dim() == 4 else output.is_contiguous()))

    for stage in model.stages:
        stage.register_forward_hook(record)  # the map the next stage's patch embedding reads
        block = stage.blocks[0]
        block.local_perception.register_forward_hook(record)
        block.ffn.register_forward_hook(record)  # (B, N, C) tokens from the FFN's last map
    with torch.no_grad():
        model(torch.randn(2, 3, 128, 96))
    assert layouts == [('Conv2d', True), ('InvertedResidualFFN', True), ('CMTStage', True)] * 4


@pytest.mark.parametrize('input_hw, resize_function', [
    ((64, 64), 'resize_position_bias'),  # the learned key grid: a dense bias
    ((96, 64), 'low_rank_position_bias'),  # a larger key grid: a LowRankBias
])
def test_bias_is_resized_once_per_stage_in_training(monkeypatch, input_hw, resize_function):
    calls = []
    resize = getattr(cmt_module, resize_function)
    monkeypatch.setattr(cmt_module, resize_function,
                        lambda *args, **kwargs: calls.append(args[1]) or resize(*args, **kwargs))
    model = tiny().train()
    sum(o.mean() for o in model(torch.randn(2, 3, *input_hw))).backward()
    h, w = input_hw[0] // 4, input_hw[1] // 4
    # one per stage, not one per block
    assert calls == [(h, w), (h // 2, w // 2), (h // 4, w // 4), (h // 8, w // 8)]
    assert all(stage.position_bias.grad.abs().sum() > 0 for stage in model.stages)


def test_low_rank_bias_at_larger_key_grids_gives_the_dense_bias_results(monkeypatch):
    """Above the learned key grid the stages pass a LowRankBias; the outputs and gradients are
    those of the dense resized bias."""
    x = torch.randn(2, 3, 160, 224, dtype=torch.float64)  # key grid 5x7 > the learned 2x2
    stage = tiny().stages[0]
    assert isinstance(stage.resized_position_bias((40, 56), (5, 7)), LowRankBias)
    assert isinstance(stage.resized_position_bias((16, 16), (2, 2)), torch.Tensor)

    def outputs_and_gradients():
        model = tiny().double().train()
        outs = model(x)
        sum(out.square().mean() for out in outs).backward()
        return outs, {name: p.grad for name, p in model.named_parameters()}

    outs, grads = outputs_and_gradients()
    monkeypatch.setattr(
        cmt_module.CMTStage, 'resized_position_bias',
        lambda self, query_hw, key_hw, dtype=None: cmt_module.resize_position_bias(
            self.position_bias, query_hw, key_hw))
    expected_outs, expected_grads = outputs_and_gradients()
    for out, expected in zip(outs, expected_outs):
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-12)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_bias_comes_in_the_autocast_dtype_with_aligned_rows():
    stage = tiny().eval().stages[0]
    with torch.no_grad():
        bias = stage.resized_position_bias((16, 16), (2, 2), torch.bfloat16)
        plain = stage.resized_position_bias((16, 16), (2, 2))
    assert bias.dtype == torch.bfloat16 and bias.stride(1) % 8 == 0 and plain.stride(1) % 8 == 0
    # The attention weights are the same (the cast may shift rows, which softmax ignores).
    torch.testing.assert_close(bias.float().softmax(-1), plain.softmax(-1), rtol=0, atol=1e-2)
    x = torch.randn(1, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert cmt_module.attention_dtype(x) == torch.bfloat16
    assert cmt_module.attention_dtype(x.double()) == torch.float64


def test_compiled_training_gives_the_same_gradients():
    # aot_eager: dynamo's graph and AOT autograd, as inductor uses them, without inductor's
    # C++ code generation, which takes minutes for a backward pass on a CPU.
    plain = tiny(COMPILE_ARCH).train()
    compiled_model = tiny(COMPILE_ARCH).train()
    compiled = torch.compile(compiled_model, backend='aot_eager', dynamic=False)
    x = torch.randn(2, 3, 64, 96)
    for model in (plain, compiled):
        sum(o.square().mean() for o in model(x)).backward()
    for (name, param), compiled_param in zip(plain.named_parameters(),
                                             compiled_model.parameters()):
        torch.testing.assert_close(compiled_param.grad, param.grad, rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_inductor_compiled_inference_gives_the_same_outputs():
    torch._dynamo.reset()
    counters.clear()
    model = tiny(COMPILE_ARCH).eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, dynamic=False)
    with torch.no_grad():
        expected = model(x)
        outs = compiled(x)
    assert_outputs_close(outs, expected)
    # One graph: the inference cache of the resized bias must not split it.
    assert counters['stats']['unique_graphs'] == 1


def test_gradients_come_in_the_layout_of_their_weights():
    """DDP copies every gradient whose strides differ from its parameter's into its bucket
    (warning 'Grad strides do not match bucket view strides')."""
    model = tiny(COMPILE_ARCH).train()
    model(torch.randn(2, 3, 64, 64))[-1].float().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad.stride() == param.stride(), name


def assert_conv_matches(conv, reference):
    """``conv`` gives ``reference(x, weight, bias)``'s output and gradients on a channels_last
    map, each gradient in the layout of its tensor."""
    torch.manual_seed(0)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(2, conv.in_channels, 9, 7).to(memory_format=torch.channels_last)
    inputs = [x.requires_grad_(), conv.weight, conv.bias]
    copies = [t.detach().clone().requires_grad_() for t in inputs]
    out, expected = conv(x), reference(*copies)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    for tensor, copy in zip(inputs, copies):
        torch.testing.assert_close(tensor.grad, copy.grad)
        assert tensor.grad.stride() == tensor.stride()
    # Checkpoints hold the plain conv's weight and bias only.
    assert list(conv.state_dict()) == ['weight', 'bias']


def test_pointwise_conv_is_the_1x1_conv():
    assert_conv_matches(cmt_module.PointwiseConv(6, 10), F.conv2d)


def test_depthwise_conv_with_shortcut_is_conv_plus_input():
    assert_conv_matches(
        cmt_module.DepthwiseConvWithShortcut(6),
        lambda x, weight, bias: F.conv2d(x, weight, bias, padding=1, groups=6) + x)
