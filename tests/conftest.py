"""Shared test set-up."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def restore_default_scope():
    """mmengine's default scope is process-wide: a test that sets one (as a Runner or
    init_default_scope does) would change how later tests resolve registry names."""
    scopes = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(scopes)
