"""Helpers: checkpoint loading and conversion (``checkpoint``), complexity counting
(``complexity``), operator counting (``op_count``), environment checks (``compat``), the GPU's
SM count (``device``), a cache that ``torch.compile`` traces through (``cache``), checks that a
config's data exists (``dataset_check``) and the demo's data (``synthetic_coco``).

Import the submodules directly; this package imports nothing heavy on its own.
"""
