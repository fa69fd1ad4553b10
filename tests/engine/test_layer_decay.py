"""Layer-wise lr decay for classifiers (model.get_layer_depth) and detector-like models."""
import pytest
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.models import ImageClassifier

from cmt_mm.models import CMT

OPTIM_WRAPPER = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    constructor='cmt_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.5, norm_decay_mult=0.0))


class Detector(nn.Module):
    """An mmdet-like model: a backbone and a neck, but no get_layer_depth of its own."""

    def __init__(self):
        super().__init__()
        self.backbone = CMT('ti')
        self.neck = nn.Conv2d(368, 8, 1)


def lr_by_name(optim_wrapper):
    # mmengine appends a group of its own (a placeholder tensor, no param_name).
    return {group['param_name']: group['lr'] for group in optim_wrapper.param_groups
            if 'param_name' in group}


@pytest.mark.parametrize('build', [
    lambda: ImageClassifier(backbone=dict(type='cmt_mm.CMT', arch='ti'),
                            head=dict(type='cmt_mm.CMTClsHead', num_classes=10,
                                      in_channels=368)),
    Detector,
])
def test_layer_decay_groups(build):
    init_default_scope('mmpretrain')
    model = build()
    lrs = lr_by_name(build_optim_wrapper(model, OPTIM_WRAPPER))
    top = [name for name in lrs if not name.startswith('backbone.')]
    assert top and all(lrs[name] == pytest.approx(1e-3) for name in top)
    # 18 layers: the stem is layer 0, so its lr is 0.5 ** 17 of the top.
    assert lrs['backbone.stem.0.conv.weight'] == pytest.approx(1e-3 * 0.5**17)
    assert lrs['backbone.stages.3.blocks.1.attn.q.weight'] == pytest.approx(1e-3 * 0.5)
    assert lrs['backbone.stages.1.blocks.0.ffn.dwconv.weight'] == pytest.approx(1e-3 * 0.5**14)


def test_a_model_without_layer_depth_is_refused():
    init_default_scope('mmpretrain')
    with pytest.raises(TypeError, match='get_layer_depth'):
        build_optim_wrapper(nn.Linear(2, 2), OPTIM_WRAPPER)
