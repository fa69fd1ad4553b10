"""Visualizers (``cmt_mm.DetLocalVisualizer`` needs mmdet, a detection extra)."""
import importlib.util

if importlib.util.find_spec('mmdet') is not None:
    from .det_local_visualizer import DetLocalVisualizer  # noqa: F401

    __all__ = ['DetLocalVisualizer']
