"""Registries of cmt_mm, children of mmengine's root registries.

Because they hang off the root, ``type='cmt_mm.CMT'`` builds from a config whose default scope
is ``mmdet`` or ``mmpretrain`` alike: mmengine imports ``cmt_mm.registry`` and the ``locations``
below on first use.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='cmt_mm', locations=['cmt_mm.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='cmt_mm',
    locations=['cmt_mm.engine'])
