"""Registries of cmt_mm, children of mmengine's root registries.

Because they hang off the root, ``type='cmt_mm.CMT'`` builds from a config whose default scope
is ``mmdet`` or ``mmpretrain`` alike: mmengine imports ``cmt_mm.registry`` and the ``locations``
below on first use.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='cmt_mm', locations=['cmt_mm.models'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='cmt_mm',
    locations=['cmt_mm.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='cmt_mm', locations=['cmt_mm.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope='cmt_mm', locations=['cmt_mm.engine'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, scope='cmt_mm', locations=['cmt_mm.datasets'])
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, scope='cmt_mm', locations=['cmt_mm.evaluation'])
# cmt_mm's own: augmentations of whole batches, built by BatchAugmentClsDataPreprocessor
BATCH_TRANSFORMS = Registry('batch transform', scope='cmt_mm', locations=['cmt_mm.models'])
VISUALIZERS = Registry(
    'visualizer', parent=MMENGINE_VISUALIZERS, scope='cmt_mm',
    locations=['cmt_mm.visualization'])
