"""Evaluation metrics (``cmt_mm.CocoMetric`` needs mmdet, a detection extra)."""
import importlib.util

if importlib.util.find_spec('mmdet') is not None:
    from .coco_metric import CocoMetric  # noqa: F401

    __all__ = ['CocoMetric']
