"""Environment checks and narrow fixes for the OpenMMLab stack that ``cmt_mm`` runs on.

The pinned stack (mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0, mmpretrain 1.2.0) predates
the torch and transformers releases it meets today. Each function here either turns a
known deep failure into a short, actionable message or fixes the problem in-process,
without editing site-packages. ``tools/train.py`` and ``tools/test.py`` call
:func:`setup_environment` before they build anything.

All functions are idempotent.
"""
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import pickle
import re
import sys
from typing import Callable, Optional

__all__ = [
    'EnvironmentProblem', 'UntrustedCheckpointError', 'check_mmcv_ops',
    'allow_mmengine_checkpoints', 'disable_mmpretrain_multimodal_if_broken',
    'enable_cpu_distributed', 'setup_environment'
]

# mmdet 3.3.0 asserts mmcv_minimum_version <= mmcv < mmcv_maximum_version at import.
MMDET_MMCV_MIN = '2.0.0rc4'
MMDET_MMCV_MAX = '2.2.0'
MMCV_FIX = ('run `bash tools/setup_env.sh`: it installs mmcv 2.1.0 with compiled ops, '
            'building it with MMCV_WITH_OPS=1 and pip --no-build-isolation, or taking a '
            'matching wheel from the directory named by CMT_MM_WHEELHOUSE')


class EnvironmentProblem(RuntimeError):
    """The installed packages cannot run the requested task; the message says how to fix it."""


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a pickled global outside the mmengine checkpoint allow-list."""


def _log(msg: str, level: int = logging.WARNING) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


def _version_tuple(version: str):
    from mmengine.utils import digit_version
    return digit_version(version)


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# mmcv: detection needs mmcv's compiled ops and a version mmdet 3.3.0 accepts.
# --------------------------------------------------------------------------------------


def check_mmcv_ops(mmcv_version: Optional[str] = None,
                   import_module: Callable = importlib.import_module) -> str:
    """Check that mmcv can serve mmdet 3.3.0 and return its version.

    Args:
        mmcv_version: The mmcv version to judge. ``None`` reads the installed one.
        import_module: Used to import ``mmcv._ext``; injectable for tests.

    Raises:
        EnvironmentProblem: mmcv is missing, has a version mmdet 3.3.0 refuses, or
            lacks (or cannot load) its compiled ops.
    """
    if mmcv_version is None:
        try:
            mmcv_version = import_module('mmcv').__version__
        except ImportError:
            raise EnvironmentProblem(
                'mmcv is not installed, and detection (mmdet) needs mmcv 2.1.0 with '
                f'compiled ops: {MMCV_FIX}.') from None

    version = _version_tuple(mmcv_version)
    if not (_version_tuple(MMDET_MMCV_MIN) <= version < _version_tuple(MMDET_MMCV_MAX)):
        raise EnvironmentProblem(
            f'mmcv {mmcv_version} is installed, but mmdet 3.3.0 only accepts '
            f'mmcv>={MMDET_MMCV_MIN},<{MMDET_MMCV_MAX}. Install mmcv 2.1.0 instead '
            f'(`pip uninstall mmcv mmcv-lite`, then {MMCV_FIX}).')

    try:
        import_module('mmcv._ext')
    except ModuleNotFoundError as err:
        if err.name not in ('mmcv._ext', 'mmcv'):
            raise  # something else is missing: let the real error through
        lite = ' (the installed distribution is mmcv-lite, which never has ops)' \
            if _dist_version('mmcv-lite') else ''
        raise EnvironmentProblem(
            f'mmcv {mmcv_version} was built without its compiled ops (no module '
            f"'mmcv._ext'){lite}; mmdet needs them (nms, roi_align, ...). This happens "
            'when mmcv is built under pip build isolation, where torch is absent. '
            f'Fix: {MMCV_FIX}.') from None
    except ImportError as err:
        # The extension exists but does not load: built for another torch or Python.
        raise EnvironmentProblem(
            f"mmcv {mmcv_version}'s compiled ops do not load ({err}); they were built "
            'against a different torch or Python. Rebuild them: remove the mmcv wheel '
            f'from your wheel cache, then {MMCV_FIX}.') from None
    return mmcv_version


# --------------------------------------------------------------------------------------
# torch >= 2.6 loads with weights_only=True; mmengine 0.10.7 checkpoints need an allow-list.
# --------------------------------------------------------------------------------------

_ALLOW_LIST_NOTE = 'cmt_mm.utils.compat.allow_mmengine_checkpoints'


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` in weights-only loads.

    mmengine pickles ``HistoryBuffer``'s statistics methods (``HistoryBuffer.min`` etc.)
    as ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let a file
    read any attribute of anything it can build, so only that one use is accepted.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') \
            and callable(HistoryBuffer.__dict__.get(name)):
        return getattr(obj, name)
    # torch re-raises this as a plain UnpicklingError; _unsafe_global_in() finds it again.
    raise pickle.UnpicklingError(f'disallowed call getattr({obj!r}, {name!r})')


def _mmengine_safe_globals() -> list:
    """The globals a checkpoint saved by an mmengine 0.10.7 ``Runner`` pickles.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on a real Runner
    checkpoint (message hub: ``HistoryBuffer`` holding numpy arrays and scalars), plus
    the numpy dtype classes that the unpickler's BUILD step checks (``np.dtype('f8')``
    unpickles to a ``numpy.dtypes.Float64DType`` instance), which that function does
    not report.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    safe = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        (_history_buffer_getattr, 'builtins.getattr'),
    ]
    # Bool, integer and floating dtypes only: object dtypes would carry arbitrary pickles.
    for code in '?bBhHiIlLqQefdg':
        safe.append(type(np.dtype(code)))
    # Checkpoints written under numpy < 2 name these functions 'numpy.core.multiarray.*'.
    if multiarray.__name__ != 'numpy.core.multiarray':
        safe += [(multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
                 (multiarray.scalar, 'numpy.core.multiarray.scalar')]
    return safe


# How torch's weights-only unpickler names the global it refused (torch 2.6 .. 2.14).
_UNSAFE_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
    re.compile(r'allowlisted via `add_safe_globals`,? but got (<class [^>]+>)'),
    re.compile(r'reduce for unrecognized function (.+?)(?: which belongs|$)', re.M),
    re.compile(r'disallowed call (getattr\(.*\))'),
)


def _unsafe_global_in(message: str) -> Optional[str]:
    for pattern in _UNSAFE_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1).strip()
    return None


def _explain_refusal(loader: Callable) -> Callable:
    """Wrap an mmengine checkpoint loader so weights-only refusals name their cause."""

    @functools.wraps(loader)
    def load(filename, *args, **kwargs):
        try:
            return loader(filename, *args, **kwargs)
        except UntrustedCheckpointError:
            raise
        except pickle.UnpicklingError as err:
            culprit = _unsafe_global_in(str(err))
            if culprit is None:
                raise
        raise UntrustedCheckpointError(
            f'refusing to load {filename}: it needs the global {culprit}, which is not on '
            f'the allow-list of what mmengine checkpoints contain ({_ALLOW_LIST_NOTE}), so '
            'it is not a trusted mmengine checkpoint. Only if you trust its source, load '
            'it with torch.load(..., weights_only=False) and re-save what you need.') from None

    load._cmt_mm_explains = True
    return load


def allow_mmengine_checkpoints() -> None:
    """Let torch >= 2.6 load mmengine's own checkpoints with ``weights_only=True``.

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, so since torch 2.6
    ``--resume``, ``load_from`` and ``tools/test.py`` fail on the checkpoints mmengine
    itself writes. This registers the exact globals those checkpoints need and makes
    mmengine's loaders report any other global by name instead of a long torch message.
    Everything else keeps the weights-only protection.
    """
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader

    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4; kept in a set
        torch.serialization.add_safe_globals(_mmengine_safe_globals())

    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if not getattr(loader, '_cmt_mm_explains', False):
            CheckpointLoader._schemes[prefix] = _explain_refusal(loader)


# --------------------------------------------------------------------------------------
# mmpretrain 1.2.0 + transformers >= 5: the optional multimodal models fail to import.
# --------------------------------------------------------------------------------------

# Modules that read mmpretrain.utils.dependency.WITH_MULTIMODAL when they are imported.
_MULTIMODAL_READERS = ('mmpretrain.datasets', 'mmpretrain.models.utils',
                       'mmpretrain.models.multimodal')


def disable_mmpretrain_multimodal_if_broken() -> bool:
    """Switch mmpretrain's multimodal models off when transformers >= 5 is installed.

    mmpretrain 1.2.0 imports BLIP, Flamingo, LLaVA, ... (and their ``transformers``
    imports) whenever ``transformers>=4.28`` is installed, and those imports break with
    transformers 5, taking ``import mmpretrain.models`` down with them. Setting
    ``WITH_MULTIMODAL = False`` before ``mmpretrain.models``/``mmpretrain.datasets`` are
    imported makes mmpretrain register placeholders instead, as if transformers were absent.

    Returns:
        bool: Whether the multimodal part was switched off by this call.
    """
    version = _dist_version('transformers')
    if version is None or _version_tuple(version) < _version_tuple('5.0.0'):
        return False
    if importlib.util.find_spec('mmpretrain') is None:
        return False
    from mmpretrain.utils import dependency
    if not dependency.WITH_MULTIMODAL:
        return False  # already off (by us, or pycocotools is missing)

    too_late = [name for name in _MULTIMODAL_READERS if name in sys.modules]
    if too_late:
        _log(f'transformers {version} breaks mmpretrain 1.2.0 multimodal models, but '
             f'{", ".join(too_late)} was imported before cmt_mm could switch them off; '
             'call cmt_mm.utils.compat.setup_environment() earlier or install '
             '"transformers<5".')
        return False
    dependency.WITH_MULTIMODAL = False
    _log(f'transformers {version} is installed, and mmpretrain 1.2.0 multimodal models '
         '(BLIP, LLaVA, ...) do not import with transformers>=5: switched them off for '
         'this process; install "transformers<5" if you need them.')
    return True


# --------------------------------------------------------------------------------------
# CPU-only distributed runs (gloo) with mmengine's launcher='pytorch'.
# --------------------------------------------------------------------------------------


def _has_accelerator() -> bool:
    import torch
    from mmengine.device import (is_mlu_available, is_musa_available,
                                 is_npu_available)
    return (torch.cuda.is_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def enable_cpu_distributed() -> None:
    """Make mmengine's ``launcher='pytorch'`` work on machines without a GPU.

    ``mmengine.dist.utils._init_dist_pytorch`` calls ``torch.cuda.set_device`` whenever
    no NPU/MLU/MUSA is present, which raises on a CUDA build without a GPU ("Found no
    NVIDIA driver") and on a CPU build. Without an accelerator the device choice is
    meaningless, so the wrapper skips it and initialises the process group directly.
    With any accelerator present mmengine's own code runs unchanged.
    """
    from mmengine.dist import utils as dist_utils

    original = dist_utils._init_dist_pytorch
    if getattr(original, '_cmt_mm_cpu_aware', False):
        return

    @functools.wraps(original)
    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        if init_backend != 'torch' or _has_accelerator():
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            raise EnvironmentProblem(
                'distributed backend nccl needs GPUs, and this machine has none: use '
                "gloo (env_cfg=dict(dist_cfg=dict(backend='gloo'))); tools/train.py and "
                'tools/test.py choose it automatically.')
        import torch.distributed as torch_dist
        torch_dist.init_process_group(backend=backend, **kwargs)

    init_dist_pytorch._cmt_mm_cpu_aware = True
    dist_utils._init_dist_pytorch = init_dist_pytorch


def setup_environment(detection: bool = False) -> None:
    """Apply all checks and fixes; call before mmpretrain/mmdet models are imported.

    Args:
        detection: The task needs mmdet, so mmcv's compiled ops are checked too.
    """
    if detection:
        check_mmcv_ops()
    disable_mmpretrain_multimodal_if_broken()
    allow_mmengine_checkpoints()
    enable_cpu_distributed()
