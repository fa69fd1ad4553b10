"""cmt_mm's modules build by their scoped names from the mmdet and mmpretrain scopes."""
import pytest
from mmengine.registry import MODELS, init_default_scope

from cmt_mm.models import CMT, CMTClsHead


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_backbone_builds_from_other_scopes(scope):
    init_default_scope(scope)
    assert isinstance(MODELS.build(dict(type='cmt_mm.CMT', arch='ti')), CMT)
    head = MODELS.build(dict(type='cmt_mm.CMTClsHead', num_classes=3, in_channels=8))
    assert isinstance(head, CMTClsHead)
