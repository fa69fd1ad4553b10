"""Reading CMT checkpoints: the authors' release, converted classifiers and plain backbones.

The released classifier checkpoints hold their weights under ``model`` with keys such as
``blocks_a.0.attn.q.weight``; :func:`convert_released_cmt` renames them to an mmpretrain
``ImageClassifier`` state dict (``backbone.stages.0.blocks.0.attn.q.weight``, ``head.fc.weight``).
"""
import os.path as osp
import pickle
import re
from collections import Counter, OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.runner import CheckpointLoader

STAGE_INDEX = {'a': 0, 'b': 1, 'c': 2, 'd': 3}

# Released module names -> ours, outside the blocks.
_TOP_LEVEL = {
    **{f'stem_conv{i + 1}': f'backbone.stem.{i}.conv' for i in range(3)},
    **{f'stem_norm{i + 1}': f'backbone.stem.{i}.norm' for i in range(3)},
    **{f'patch_embed_{s}.proj': f'backbone.stages.{i}.patch_embed.projection'
       for s, i in STAGE_INDEX.items()},
    **{f'patch_embed_{s}.norm': f'backbone.stages.{i}.patch_embed.norm'
       for s, i in STAGE_INDEX.items()},
    '_fc': 'head.conv',
    '_bn': 'head.norm',
    'head': 'head.fc',
}
# Released module names inside ``blocks_<stage>.<j>`` -> ours inside ``stages.<i>.blocks.<j>``.
_IN_BLOCK = {
    'proj': 'local_perception',
    'norm1': 'norm1',
    'norm2': 'norm2',
    'attn.q': 'attn.q',
    'attn.k': 'attn.k',
    'attn.v': 'attn.v',
    'attn.proj': 'attn.proj',
    'attn.sr.0': 'attn.reduction.conv',
    'attn.sr.1': 'attn.reduction.norm',
    'mlp.conv1.0': 'ffn.expand.conv',
    'mlp.conv1.2': 'ffn.expand.norm',
    'mlp.proj': 'ffn.dwconv',
    'mlp.proj_bn': 'ffn.dw_norm',
    'mlp.conv2.0': 'ffn.project.conv',
    'mlp.conv2.1': 'ffn.project.norm',
}
_BLOCK_KEY = re.compile(r'^blocks_([abcd])\.(\d+)\.(.+)\.([^.]+)$')
_POSITION_BIAS_KEY = re.compile(r'^relative_pos_([abcd])$')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def is_released_cmt(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses the key names of the authors' released code."""
    return any(k.startswith(('stem_conv1.', 'relative_pos_a', 'blocks_a.')) for k in state_dict)


def _convert_key(key: str) -> Optional[str]:
    match = _POSITION_BIAS_KEY.match(key)
    if match:
        return f'backbone.stages.{STAGE_INDEX[match[1]]}.position_bias'
    match = _BLOCK_KEY.match(key)
    if match:
        stage, block, module, param = match.groups()
        if module in _IN_BLOCK:
            return f'backbone.stages.{STAGE_INDEX[stage]}.blocks.{block}.{_IN_BLOCK[module]}.{param}'
        return None
    module, _, param = key.rpartition('.')
    return f'{_TOP_LEVEL[module]}.{param}' if module in _TOP_LEVEL else None


def convert_released_cmt(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a released CMT classifier state dict to an mmpretrain ``ImageClassifier`` one.

    Raises:
        CheckpointError: if a key belongs to no part of the released model.
    """
    converted, unknown = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = _convert_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise CheckpointError(
            f'{len(unknown)} keys are not part of a released CMT classifier, e.g. {unknown[:5]}; '
            'is this a checkpoint of the authors\' CMT code?')
    return converted


# What a file that torch cannot read is, told by its first bytes.
_FILE_KINDS = (
    (b'PK\x03\x04', 'it is a zip archive that is truncated, corrupt or not from torch.save'),
    (b'\x80', 'it is a pickle but not a PyTorch checkpoint (or a truncated one)'),
    (b'\xff\xd8\xff', 'it is a JPEG image'),
    (b'\x89PNG', 'it is a PNG image'),
    (b'\x1f\x8b', 'it is gzip-compressed'),
    (b'\x93NUMPY', 'it is a NumPy array file'),
)
# What torch.load raises on bytes that are not a checkpoint (its unpickler's errors included;
# OSError: a zip archive cut short, or a file that cannot be read at all).
_UNREADABLE = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError,
               KeyError, IndexError, TypeError, OSError)


def _describe_unreadable(filename: str, err: Exception) -> str:
    """Why torch could not read ``filename``, in user terms rather than torch's internals."""
    if '://' in filename:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    try:
        with open(filename, 'rb') as f:
            head = f.read(64)
    except OSError as open_err:
        return open_err.strerror or str(open_err)  # e.g. 'Permission denied'
    if not head:
        return 'the file is empty'
    for magic, kind in _FILE_KINDS:
        if head.startswith(magic):
            return kind
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        text = ''
    if text and all(c.isprintable() or c.isspace() for c in text):
        return 'it is a text file'
    return 'its format is unknown (truncated or corrupt?)'


def load_checkpoint_file(filename: str, map_location: str = 'cpu') -> dict:
    """Load a checkpoint file, turning the many ways a file can be wrong into clear errors."""
    from .compat import (UntrustedCheckpointError,  # our own checkpoints carry mmengine types
                         allow_mmengine_checkpoints)
    allow_mmengine_checkpoints()
    if '://' not in filename:
        if osp.isdir(filename):
            raise CheckpointError(f'checkpoint {filename!r} is a directory, not a file')
        if not osp.isfile(filename):
            raise CheckpointError(f'checkpoint file {filename!r} does not exist; check the path '
                                  '(or override it, e.g. with --cfg-options)')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except UntrustedCheckpointError:
        raise  # says itself what it refused and why
    except _UNREADABLE as err:
        raise CheckpointError(f'{filename!r} is not a readable PyTorch checkpoint: '
                              f'{_describe_unreadable(filename, err)}') from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{filename!r} holds a {type(checkpoint).__name__}, not a '
                              'checkpoint dict of weights')
    return checkpoint


def weights_of(checkpoint: dict, filename: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint (``state_dict``, ``model`` or the dict itself)."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    weights = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v) for k, v in checkpoint.items())
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f'{filename!r} holds no state dict of tensors (keys: '
                              f'{list(weights)[:5]})')
    return weights


class WeightMatch(NamedTuple):
    """How the tensors of a checkpoint line up with the ``state_dict`` of a model."""
    missing: List[str]  # the model's keys that the checkpoint lacks
    mismatched: List[str]  # keys in both, with shapes that cannot be loaded
    unexpected: List[str]  # the checkpoint's keys that the model lacks


def match_weights(own: Dict[str, torch.Tensor], shapes: Dict[str, torch.Size]) -> WeightMatch:
    """Compare a model's state dict with the tensor shapes of a checkpoint.

    Position biases of another pretraining resolution count as matching: CMT resizes them on
    loading.
    """

    def fits(key: str) -> bool:
        saved, model = tuple(shapes[key]), tuple(own[key].shape)
        resizable = key.endswith('position_bias') and len(saved) == 3 and saved[0] == model[0]
        return saved == model or resizable

    return WeightMatch(
        missing=[k for k in own if k not in shapes],
        mismatched=[k for k in shapes if k in own and not fits(k)],
        unexpected=[k for k in shapes if k not in own])


def _describe(keys: List[str], limit: int = 5) -> str:
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def _by_module(keys: List[str], all_keys) -> str:
    """How many tensors of each top-level module ``keys`` holds, e.g. 'neck 16/16, head 2/4'."""
    totals = Counter(k.split('.', 1)[0] for k in all_keys)
    counts = Counter(k.split('.', 1)[0] for k in keys)
    return ', '.join(f'{module} {n}/{totals[module]}' for module, n in counts.items())


def _mismatch_report(match: WeightMatch, own: Dict[str, torch.Tensor],
                     shapes: Dict[str, torch.Size]) -> List[str]:
    report = []
    if match.mismatched:
        report.append(f'shape mismatches ({len(match.mismatched)}): ' + _describe([
            f'{k}: checkpoint {tuple(shapes[k])} vs model {tuple(own[k].shape)}'
            for k in match.mismatched]))
    if match.missing:
        report.append(f'missing ({len(match.missing)}; {_by_module(match.missing, own)}): '
                      f'{_describe(match.missing)}')
    if match.unexpected:
        report.append(f'unexpected ({len(match.unexpected)}; '
                      f'{_by_module(match.unexpected, shapes)}): {_describe(match.unexpected)}')
    return report


def _cmt_arch_hint(backbone: Optional[nn.Module], shapes: Dict[str, torch.Size],
                   prefix: str = '') -> Optional[str]:
    """Name the CMT variant of the checkpoint when it is not the backbone's."""
    arch_zoo = getattr(backbone, 'arch_zoo', None)
    saved = [shapes.get(f'{prefix}stages.{i}.patch_embed.projection.weight') for i in range(4)]
    if not arch_zoo or None in saved:
        return None
    widths = [shape[0] for shape in saved]
    if widths == list(backbone.embed_dims):
        return None
    arch = next((f"CMT arch '{name}'" for name, setting in arch_zoo.items()
                 if list(setting['embed_dims']) == widths), 'a custom CMT arch')
    return (f'the checkpoint holds {arch} (embed_dims {widths}) and the model has embed_dims '
            f'{list(backbone.embed_dims)}: set the same arch, or use a checkpoint of this one')


def match_backbone_weights(backbone: nn.Module, weights: Dict[str, torch.Tensor],
                           filename: str, min_matched: float = 0.9) -> Tuple[List[str], List[str]]:
    """Check that ``weights`` fit ``backbone``; returns (missing, unexpected) keys.

    Raises :class:`CheckpointError` on any shape mismatch (but a resizable position bias), or
    when fewer than ``min_matched`` of the backbone's tensors are found: a wrong file must not
    leave a randomly initialised backbone behind a warning.
    """
    own = backbone.state_dict()
    shapes = {k: v.shape for k, v in weights.items()}
    match = match_weights(own, shapes)
    matched = len(own) - len(match.missing) - len(match.mismatched)
    if match.mismatched or matched < min_matched * len(own):
        hint = _cmt_arch_hint(backbone, shapes) or (
            'it has none of the backbone\'s tensor names: is it of another model?'
            if len(match.missing) == len(own) else 'is it a checkpoint of the same variant?')
        raise CheckpointError('; '.join(
            [f'{filename!r} does not fit this {type(backbone).__name__} backbone: {matched} '
             f'of its {len(own)} tensors matched', hint] + _mismatch_report(match, own, shapes)))
    return match.missing, match.unexpected


def check_resumable(checkpoint: dict, filename: str) -> None:
    """``--resume`` needs the training state that mmengine's ``CheckpointHook`` saves."""
    meta = checkpoint.get('meta')
    if not (isinstance(meta, dict) and {'epoch', 'iter'} <= set(meta)
            and 'message_hub' in checkpoint):
        raise CheckpointError(
            f'{filename!r} holds no training state (epoch, iteration, message hub), so there is '
            'nothing to resume: --resume takes a checkpoint that tools/train.py wrote; to start '
            f'training from these weights, use --cfg-options load_from={filename}')


def read_model_checkpoint(filename: str, resume: bool = False) -> Dict[str, torch.Size]:
    """Read a whole-model checkpoint as mmengine's Runner will and return its tensor shapes.

    For tools, before they build the Runner: a file that cannot be read, that is in the
    authors' release format (the Runner would load nothing from it) or, with ``resume``, that
    has no training state fails at once. :func:`check_model_weights` then compares the shapes
    with the built model; keeping only the shapes frees the tensors in the meantime.
    """
    checkpoint = load_checkpoint_file(filename)
    if resume:
        check_resumable(checkpoint, filename)
    if is_released_cmt(weights_of(checkpoint, filename)):
        raise CheckpointError(
            f"{filename!r} is a checkpoint of the authors' CMT code, which mmengine does not "
            'load into a model: convert it with python tools/model_converters/cmt_to_mm.py '
            f'{filename} OUT.pth (an mmpretrain classifier), or start a backbone from it with '
            "init_cfg=dict(type='Pretrained', checkpoint=...)")
    # As mmengine's _load_checkpoint_to_model and Runner.load_checkpoint read it.
    state_dict = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    return OrderedDict((re.sub(r'^module\.', '', k), v.shape) for k, v in state_dict.items()
                       if isinstance(v, torch.Tensor))


def check_model_weights(model: nn.Module, shapes: Dict[str, torch.Size], filename: str,
                        max_unloaded: float = 0.) -> WeightMatch:
    """Check that a checkpoint fits a whole model, before mmengine's Runner loads it.

    The Runner (``load_from``, ``--resume``, tools/test.py) loads non-strictly: tensors that
    the file lacks, or holds in another shape, cause a warning and keep their initial, usually
    random, values.

    Args:
        model: the model, unwrapped from DDP.
        shapes: from :func:`read_model_checkpoint`.
        filename: the checkpoint, for the messages.
        max_unloaded: the fraction of the model's weights (elements of its state dict) that may
            be left so, such as a classifier layer re-sized for fine-tuning on other classes.

    Raises:
        CheckpointError: more than ``max_unloaded`` of the weights would not be loaded, or the
            file lacks a whole top-level module (a backbone-only file given for a detector: its
            neck and heads would start from scratch, which is what a backbone ``init_cfg`` is
            for).
    """
    own = model.state_dict()
    match = match_weights(own, shapes)
    total = sum(t.numel() for t in own.values())
    unloaded = sum(own[k].numel() for k in match.missing + match.mismatched)
    tensors_per_module = Counter(k.split('.', 1)[0] for k in own)
    missing_per_module = Counter(k.split('.', 1)[0] for k in match.missing)
    absent = [m for m, n in missing_per_module.items() if n == tensors_per_module[m]]
    if absent or unloaded > max_unloaded * total:
        raise CheckpointError('; '.join(
            [f'{filename!r} does not fit this {type(model).__name__}: {unloaded:,} of its '
             f'{total:,} weights ({unloaded / total:.1%}) would keep their initial values',
             _model_hint(model, own, absent, shapes)] + _mismatch_report(match, own, shapes)))
    return match


def _model_hint(model: nn.Module, own: Dict[str, torch.Tensor], absent: List[str],
                shapes: Dict[str, torch.Size]) -> str:
    """What the user most likely meant, from the modules the checkpoint lacks."""
    arch_hint = _cmt_arch_hint(getattr(model, 'backbone', None), shapes, 'backbone.')
    if arch_hint:
        return arch_hint
    backbone_only = ("a backbone-only checkpoint belongs in model.backbone.init_cfg="
                     "dict(type='Pretrained', checkpoint=...)")
    if 'backbone' in absent and any(f'backbone.{k}' in own for k in shapes):
        return f'it is a bare backbone state dict: {backbone_only}'
    if absent and 'backbone' not in absent:
        return f'the checkpoint has no {", ".join(absent)}: {backbone_only}'
    if absent:
        return f'the checkpoint has no {", ".join(absent)}: is it of another model?'
    return "is it a checkpoint of this config's model (same variant, same classes)?"


def missing_pretrained_checkpoints(cfg, key: str = 'model') -> List[Tuple[str, str, str]]:
    """Local files named by ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that are missing.

    mmengine reads them only in ``runner.train()``, after the datasets and the model were built;
    looking at the config first lets a tool fail at once with the config key to change.

    Args:
        cfg: A model config (dicts and lists nested in any way).
        key: The config key of ``cfg``, used to name where each checkpoint is set.

    Returns:
        ``(config key of the checkpoint, path, type of the module it initialises)`` for each
        missing file; URLs (``scheme://``) are left to mmengine's loaders.
    """
    missing = []
    if isinstance(cfg, dict):
        for init_key, init_cfg in _init_cfgs(cfg.get('init_cfg'), f'{key}.init_cfg'):
            path = init_cfg.get('checkpoint')
            if (init_cfg.get('type') == 'Pretrained' and isinstance(path, str)
                    and '://' not in path and not osp.isfile(path)):
                missing.append((f'{init_key}.checkpoint', path, str(cfg.get('type', ''))))
        children = ((f'{key}.{k}', v) for k, v in cfg.items() if k != 'init_cfg')
    elif isinstance(cfg, (list, tuple)):
        children = ((f'{key}.{i}', v) for i, v in enumerate(cfg))
    else:
        return missing
    for child_key, child in children:
        missing += missing_pretrained_checkpoints(child, child_key)
    return missing


def _init_cfgs(init_cfg, key: str) -> List[Tuple[str, dict]]:
    """An ``init_cfg`` is one dict or a list of them."""
    if isinstance(init_cfg, dict):
        return [(key, init_cfg)]
    if isinstance(init_cfg, (list, tuple)):
        return [(f'{key}.{i}', c) for i, c in enumerate(init_cfg) if isinstance(c, dict)]
    return []


def load_backbone_weights(backbone: nn.Module, filename: str, prefix: Optional[str] = None,
                          map_location: str = 'cpu') -> None:
    """Initialise a CMT backbone from a released, converted or plain backbone checkpoint.

    Args:
        backbone: the CMT backbone.
        filename: a local path or URL.
        prefix: keep only keys under this prefix (stripped). By default ``backbone.`` if any key
            has it, else all keys.
        map_location: passed to the loader.
    """
    weights = weights_of(load_checkpoint_file(filename, map_location), filename)
    if is_released_cmt(weights):
        weights = convert_released_cmt(weights)
    if prefix is None:
        modules = {k.split('.', 1)[0] for k in weights}
        heads = sorted(m for m in modules if m.endswith('_head'))
        if heads:  # the user more likely meant the whole detector than its backbone alone
            raise CheckpointError(
                f'{filename!r} is a detector checkpoint (it has {", ".join(heads)}), not a '
                'backbone one: load a whole detector from it with load_from (or tools/test.py), '
                "or take its backbone on purpose with init_cfg prefix='backbone'")
        prefix = 'backbone.' if any(k.startswith('backbone.') for k in weights) else ''
    elif prefix and not prefix.endswith('.'):
        prefix += '.'
    weights = OrderedDict((k[len(prefix):], v) for k, v in weights.items() if k.startswith(prefix))
    missing, unexpected = match_backbone_weights(backbone, weights, filename)
    backbone.load_state_dict(weights, strict=False)
    logger = MMLogger.get_current_instance()
    own = len(backbone.state_dict())
    logger.info(f'Loaded {own - len(missing)}/{own} backbone tensors from {filename}')
    if missing:
        logger.warning(f'Backbone tensors missing from {filename}: {_describe(missing)}')
    if unexpected:
        logger.warning(f'Unused tensors in {filename}: {_describe(unexpected)}')
