"""CMT backbone: structure, shapes at any size, freezing, checkpointing, position-bias resizing."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from cmt_mm.models import CMT, CMTClsHead
from cmt_mm.models.backbones.cmt import StochasticDepth
from cmt_mm.models.backbones.position_bias import (key_resize_matrix, resize_position_bias,
                                                   resize_query_side)

BACKBONE_PARAMS = {'ti': 7_736_546, 'xs': 13_429_888, 's': 24_315_960, 'b': 43_651_996}
CLASSIFIER_PARAMS = {'ti': 9_492_426, 'xs': 15_247_208, 's': 26_256_160, 'b': 45_715_076}
NATIVE_SIZE = {'ti': 160, 'xs': 192, 's': 224, 'b': 256}
TI_DIMS = [46, 92, 184, 368]


def count(module):
    return sum(p.numel() for p in module.parameters())


def tiny(**kwargs):
    model = CMT('ti', **kwargs)
    model.init_weights()
    return model


@pytest.mark.parametrize('arch', ['ti', 'xs', 's', 'b'])
def test_parameter_counts(arch):
    backbone = CMT(arch)
    head = CMTClsHead(num_classes=1000, in_channels=backbone.embed_dims[-1])
    assert count(backbone) == BACKBONE_PARAMS[arch]
    assert count(backbone) + count(head) == CLASSIFIER_PARAMS[arch]


def test_arch_validation():
    with pytest.raises(ValueError, match="unknown CMT arch 'l'"):
        CMT('l')
    with pytest.raises(TypeError, match='str or a dict'):
        CMT(3)
    with pytest.raises(ValueError, match=r"missing \['stem_channels'\]"):
        CMT(dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], mlp_ratio=2))
    with pytest.raises(ValueError, match='4 positive ints'):
        CMT(dict(embed_dims=[8, 16, 32], depths=[1, 1, 1], mlp_ratio=2, stem_channels=8))
    with pytest.raises(ValueError, match='divisible by the heads'):
        CMT(dict(embed_dims=[8, 16, 30, 64], depths=[1, 1, 1, 1], mlp_ratio=2, stem_channels=8))
    with pytest.raises(ValueError, match='out_indices must be in 0..3'):
        CMT('ti', out_indices=(0, 4))
    with pytest.raises(ValueError, match='frozen_stages must be in -1..4'):
        CMT('ti', frozen_stages=5)
    with pytest.raises(ValueError, match='multiple of 32'):
        CMT('ti', pretrain_img_size=100)
    assert CMT('Tiny').embed_dims == TI_DIMS


def test_custom_arch():
    arch = dict(embed_dims=[8, 16, 32, 64], depths=[1, 2, 1, 1], mlp_ratio=2, stem_channels=8)
    model = CMT(arch, pretrain_img_size=64)
    assert [len(stage.blocks) for stage in model.stages] == [1, 2, 1, 1]
    outs = model(torch.randn(1, 3, 64, 96))
    assert [o.shape[1] for o in outs] == [8, 16, 32, 64]
    assert model.stages[0].position_bias.shape == (1, 16 * 16, 2 * 2)


@pytest.mark.parametrize('size', [(160, 160), (256, 320), (800, 1216), (225, 243)])
def test_output_shapes(size):
    model = tiny().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert len(outs) == 4
    h, w = size
    for i, (out, dims) in enumerate(zip(outs, TI_DIMS)):
        stride = 2**(i + 2)
        # Exact strides for multiples of 32; other sizes round down after the stem.
        assert out.shape == (1, dims, -(-h // 2) // (stride // 2), -(-w // 2) // (stride // 2))
        assert torch.isfinite(out).all()
        assert out.is_contiguous()  # mmcv's ops (RoIAlign) assume contiguous NCHW


def test_too_small_input_says_to_pad():
    with pytest.raises(ValueError, match='at least 32x32.*pad'):
        tiny()(torch.randn(1, 3, 24, 64))


@pytest.mark.parametrize('out_indices', [(3, ), (1, 2, 3), (0, 2), -1])
def test_out_indices(out_indices):
    model = tiny(out_indices=out_indices).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    indices = (3, ) if out_indices == -1 else out_indices
    assert [o.shape[1] for o in outs] == [TI_DIMS[i] for i in indices]


@pytest.mark.parametrize('frozen_stages', [0, 2, 4])
def test_frozen_stages(frozen_stages):
    model = tiny(frozen_stages=frozen_stages)
    model.train()
    frozen = [model.stem] + list(model.stages[:frozen_stages])
    trainable = list(model.stages[frozen_stages:])
    for module in frozen:
        assert all(not m.training for m in module.modules())
        assert all(not p.requires_grad for p in module.parameters())
    for module in trainable:
        assert all(m.training for m in module.modules())
        assert all(p.requires_grad for p in module.parameters())


def test_out_norms():
    model = tiny(out_indices=(1, 3), out_norm_cfg=dict(type='BN'), frozen_stages=2).train()
    assert sorted(model.out_norms) == ['1', '3']
    assert count(model) == BACKBONE_PARAMS['ti'] + 2 * (TI_DIMS[1] + TI_DIMS[3])
    assert not model.out_norms['1'].training and model.out_norms['3'].training
    out = model(torch.randn(2, 3, 64, 64) * 100)[1]
    # The trainable norm normalises per channel over the batch, whatever the input's scale.
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    torch.testing.assert_close(out.var(dim=(0, 2, 3), unbiased=False),
                               torch.ones(out.shape[1]), atol=1e-2, rtol=0)
    assert tiny().state_dict().keys() == CMT('ti').state_dict().keys()


def test_norm_eval():
    model = tiny(norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert all(m.training for m in model.modules() if isinstance(m, nn.LayerNorm))


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    # With stochastic depth: the recomputed forward must drop the same samples' branches.
    plain = tiny(drop_path_rate=0.5).train()
    checkpointed = tiny(with_cp=True, drop_path_rate=0.5).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 96)
    grads = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)
        x_ = x.clone().requires_grad_()
        sum(o.square().mean() for o in model(x_)).backward()
        grads.append((x_.grad, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grad, grads[1][1][name], msg=name)


def test_drop_path_rises_linearly():
    model = CMT('ti', drop_path_rate=0.3)
    rates = [p for stage in model.stages for p in stage.stochastic_depth.drop_probs]
    expected = torch.linspace(0, 0.3, sum(model.depths)).tolist()
    assert rates == pytest.approx(expected, abs=1e-7)  # stored as float32 keep probabilities


def test_stochastic_depth_drops_whole_samples_per_branch_and_rescales_the_kept_ones():
    depth = StochasticDepth([0.25, 0.5])
    x = torch.ones(4000, 3, 2)  # a stage's (B, N, C) input
    torch.manual_seed(0)
    scales = depth.train()(x)
    assert scales.shape == (2, 2, 4000, 1, 1)  # blocks, branches (attention, FFN), samples
    kept = scales.flatten(2) != 0
    for block, keep in enumerate([0.75, 0.5]):
        for branch in range(2):  # each branch draws its own samples
            assert kept[block, branch].float().mean().item() == pytest.approx(keep, abs=0.03)
            assert torch.equal(scales[block, branch][kept[block, branch]].unique(),
                               torch.tensor([1 / keep]))
    assert not torch.equal(kept[0, 0], kept[0, 1])
    assert depth.eval()(x) is None
    assert StochasticDepth([0., 0.]).train()(x) is None  # nothing to drop: no operators
    with pytest.raises(ValueError, match=r'probability must be in \[0, 1\), got 1'):
        StochasticDepth([0.5, 1.])


def test_stochastic_depth_scales_are_in_autocasts_dtype():
    with torch.autocast('cpu', torch.bfloat16):
        assert StochasticDepth([0.1]).train()(torch.ones(2, 3, 4)).dtype == torch.bfloat16


def test_bias_resize_is_identity_at_native_size():
    bias = torch.randn(2, 28 * 28, 7 * 7)
    assert resize_position_bias(bias, (28, 28), (7, 7)) is bias


def test_bias_resize_round_trip_of_a_smooth_bias():
    # A bias that varies smoothly with query and key position survives 14 -> 24x20 -> 14.
    q = torch.linspace(-1, 1, 14)
    k = torch.linspace(-1, 1, 7)
    qy, qx = torch.meshgrid(q, q, indexing='ij')
    ky, kx = torch.meshgrid(k, k, indexing='ij')
    bias = (torch.sin(2 * qy.reshape(-1, 1) + kx.reshape(1, -1)) +
            torch.cos(qx.reshape(-1, 1) - ky.reshape(1, -1)))[None]
    there = resize_position_bias(bias, (24, 20), (12, 10))
    assert there.shape == (1, 24 * 20, 12 * 10)
    back = resize_position_bias(there, (14, 14), (7, 7), query_grid=(24, 20), key_grid=(12, 10))
    assert (back - bias).abs().max() < 0.05


def bicubic_resize(bias, query_hw, key_hw, query_grid, key_grid):
    """The reference: ``F.interpolate`` over the query grid, then over the key grid."""
    heads, _, num_keys = bias.shape
    x = F.interpolate(bias.transpose(1, 2).reshape(heads, num_keys, *query_grid), size=query_hw,
                      mode='bicubic', align_corners=False).flatten(2).transpose(1, 2)
    return F.interpolate(x.reshape(heads, x.shape[1], *key_grid), size=key_hw, mode='bicubic',
                         align_corners=False).flatten(2)


@pytest.mark.parametrize('query_grid, query_hw, key_grid, key_hw', [
    ((14, 14), (20, 32), (7, 7), (5, 8)),  # query up, non-square; keys down and up
    ((56, 56), (16, 16), (7, 7), (9, 11)),  # query down
    ((12, 10), (14, 9), (6, 5), (6, 5)),  # non-square grids; keys unchanged
    ((8, 8), (8, 8), (3, 4), (7, 2)),  # query unchanged
])
def test_bias_resize_matches_bicubic_interpolate(query_grid, query_hw, key_grid, key_hw):
    torch.manual_seed(0)
    bias = torch.randn(2, query_grid[0] * query_grid[1], key_grid[0] * key_grid[1],
                       requires_grad=True)
    out = resize_position_bias(bias, query_hw, key_hw, query_grid, key_grid)
    ref = bicubic_resize(bias, query_hw, key_hw, query_grid, key_grid)
    assert out.shape == ref.shape == (2, query_hw[0] * query_hw[1], key_hw[0] * key_hw[1])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    grad, = torch.autograd.grad(out, bias, upstream)
    ref_grad, = torch.autograd.grad(ref, bias, upstream)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


def test_key_side_resize_is_a_matrix_whose_rows_sum_to_1():
    torch.manual_seed(0)
    bias = torch.randn(2, 8 * 8, 3 * 3, dtype=torch.float64)
    matrix = key_resize_matrix((3, 3), (5, 7), torch.device('cpu'), torch.float64)
    assert matrix.shape == (5 * 7, 3 * 3)
    # What lets a cast shift the rows of a low-rank bias's query factor (bias_in_dtype).
    torch.testing.assert_close(matrix.sum(1), torch.ones(35, dtype=torch.float64))
    torch.testing.assert_close(resize_query_side(bias, (13, 11)) @ matrix.t(),
                               resize_position_bias(bias, (13, 11), (5, 7)))


def test_bias_resize_ignores_autocast_and_inference_mode():
    bias = torch.randn(1, 8 * 8, 3 * 3)
    ref = bicubic_resize(bias, (13, 11), (5, 3), (8, 8), (3, 3))
    with torch.autocast('cpu', dtype=torch.bfloat16):  # would run the matmuls in bfloat16
        out = resize_position_bias(bias, (13, 11), (5, 3))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # The interpolation matrices are cached: ones first made in inference mode serve autograd.
    with torch.inference_mode():
        resize_position_bias(bias, (23, 29), (4, 6))  # sizes no other test uses
    resize_position_bias(bias.requires_grad_(), (23, 29), (4, 6)).sum().backward()
    assert bias.grad.abs().sum() > 0


def test_bias_cache_at_inference():
    model = tiny().eval()
    stage = model.stages[0]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
        first = stage.resized_position_bias((16, 24), (2, 3))
        assert stage.resized_position_bias((16, 24), (2, 3)) is first
        stage.position_bias.mul_(2)  # new weights must not hit the stale entry
        assert torch.allclose(stage.resized_position_bias((16, 24), (2, 3)), 2 * first)
    # With autograd the bias is resized afresh, so that it learns.
    model.train()
    assert stage.resized_position_bias((16, 24), (2, 3)).requires_grad


def test_position_bias_learns_at_other_sizes():
    model = tiny().train()
    sum(o.mean() for o in model(torch.randn(2, 3, 96, 64))).backward()
    assert all(stage.position_bias.grad.abs().sum() > 0 for stage in model.stages)


def test_bf16_autocast_forward_is_finite():
    model = tiny().eval()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 96) * 50)
    assert all(torch.isfinite(o.float()).all() for o in outs)


def test_layer_depth():
    model = CMT('ti')  # depths 2, 2, 10, 2: 16 blocks, 18 layers
    assert model.get_layer_depth('backbone.stem.0.conv.weight', 'backbone.') == (0, 18)
    assert model.get_layer_depth('backbone.stages.0.patch_embed.norm.bias', 'backbone.') == (0, 18)
    assert model.get_layer_depth('backbone.stages.0.blocks.1.attn.q.weight', 'backbone.')[0] == 2
    assert model.get_layer_depth('backbone.stages.1.patch_embed.projection.weight',
                                 'backbone.')[0] == 3
    assert model.get_layer_depth('backbone.stages.2.position_bias', 'backbone.')[0] == 5
    assert model.get_layer_depth('backbone.stages.3.blocks.1.ffn.dwconv.weight',
                                 'backbone.')[0] == 16
    assert model.get_layer_depth('neck.fpn_convs.0.conv.weight', 'backbone.') == (17, 18)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (17, 18)
    depths = [model.get_layer_depth('backbone.' + name, 'backbone.')[0]
              for name, _ in model.named_parameters() if '.blocks.' in name]
    assert depths == sorted(depths)  # block ids never go down through the network


def test_init_from_scratch_keeps_activations_in_fp16_range():
    # With the reference's fan-out init of the local perception unit the residual stream grew
    # ~1.7x per block and CMT-S's third stage reached ~3e5 at init (fp16 overflows at 65504).
    torch.manual_seed(0)
    model = CMT('s')
    model.init_weights()
    x = torch.randn(2, 3, 96, 96) * 2
    with torch.autocast('cpu', dtype=torch.float16):
        outs = model.train()(x)
    assert all(torch.isfinite(o).all() for o in outs)
    assert max(o.abs().max().item() for o in outs) < 1e3
