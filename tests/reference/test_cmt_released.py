"""Checks that the CMT test oracle matches the released checkpoints' structure (spec figures)."""
import pytest
import torch

from .cmt_released import VARIANTS, build_released_cmt

HEAD_PREFIXES = ('_fc.', '_bn.', 'head.')

# Figures measured on the released code (shared/spec/cmt-reference.md).
PARAMS_WITH_HEAD = {'ti': 9_492_426, 'xs': 15_247_208, 's': 26_256_160, 'b': 45_715_076}
PARAMS_BACKBONE = {'ti': 7_736_546, 'xs': 13_429_888, 's': 24_315_960, 'b': 43_651_996}


@pytest.fixture(scope='module')
def models():
    """One model per variant, built once (CMT-B is slow-ish to construct)."""
    return {name: build_released_cmt(name) for name in VARIANTS}


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_param_count_with_head(models, variant):
    total = sum(p.numel() for p in models[variant].parameters())
    assert total == PARAMS_WITH_HEAD[variant]


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_param_count_backbone_only(models, variant):
    total = sum(p.numel() for name, p in models[variant].named_parameters()
                if not name.startswith(HEAD_PREFIXES))
    assert total == PARAMS_BACKBONE[variant]


def test_cmt_s_state_dict_size(models):
    assert len(models['s'].state_dict()) == 1079


def test_cmt_s_relative_pos_shapes(models):
    state = models['s'].state_dict()
    expected = {'a': (1, 3136, 49), 'b': (2, 784, 49), 'c': (4, 196, 49), 'd': (8, 49, 49)}
    for stage, shape in expected.items():
        assert tuple(state[f'relative_pos_{stage}'].shape) == shape


def test_cmt_s_key_names(models):
    """Spot-check released key names, including that stage d has no `sr` module."""
    keys = set(models['s'].state_dict())
    for key in ('stem_conv1.weight', 'stem_norm1.running_mean', 'stem_norm3.num_batches_tracked',
                'patch_embed_a.proj.weight', 'patch_embed_a.norm.weight',
                'blocks_a.0.proj.weight', 'blocks_a.0.norm1.weight', 'blocks_a.0.norm2.bias',
                'blocks_a.0.attn.q.weight', 'blocks_a.0.attn.proj.bias',
                'blocks_a.0.attn.sr.0.weight', 'blocks_c.15.attn.sr.1.running_var',
                'blocks_a.0.mlp.conv1.0.weight', 'blocks_a.0.mlp.conv1.2.running_mean',
                'blocks_a.0.mlp.proj.weight', 'blocks_a.0.mlp.proj_bn.weight',
                'blocks_a.0.mlp.conv2.0.weight', 'blocks_a.0.mlp.conv2.1.running_var',
                '_fc.weight', '_bn.running_mean', 'head.weight', 'head.bias'):
        assert key in keys, key
    assert not any(k.startswith('blocks_d.') and '.attn.sr.' in k for k in keys)


def test_cmt_ti_forward(models):
    model = models['ti'].eval()
    size = VARIANTS['ti']['img_size']
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()


def test_wrong_resolution_is_rejected(models):
    with pytest.raises(ValueError):
        models['ti'].eval()(torch.randn(1, 3, 224, 224))
