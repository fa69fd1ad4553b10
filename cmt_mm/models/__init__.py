"""Importing this package registers cmt_mm's models (``cmt_mm.CMT``, ``cmt_mm.CMTClsHead``,
``cmt_mm.BatchAugmentClsDataPreprocessor`` and,
when mmdet is installed, the detection loss ``cmt_mm.Float32FocalLoss``)."""
import importlib.util

from .backbones import *  # noqa: F401,F403
from .data_preprocessors import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403

# Classification needs no mmdet (requirements/detection.txt is an extra).
if importlib.util.find_spec('mmdet') is not None:
    from .losses import *  # noqa: F401,F403
