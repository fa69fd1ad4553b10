"""Reading CMT checkpoints: the authors' release, converted classifiers and plain backbones.

The released classifier checkpoints hold their weights under ``model`` with keys such as
``blocks_a.0.attn.q.weight``; :func:`convert_released_cmt` renames them to an mmpretrain
``ImageClassifier`` state dict (``backbone.stages.0.blocks.0.attn.q.weight``, ``head.fc.weight``).
"""
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

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


def load_checkpoint_file(filename: str, map_location: str = 'cpu') -> dict:
    """Load a checkpoint file, turning the many ways a file can be wrong into clear errors."""
    from .compat import allow_mmengine_checkpoints  # our own checkpoints carry mmengine types
    allow_mmengine_checkpoints()
    if '://' not in filename and not osp.isfile(filename):
        raise CheckpointError(f'checkpoint file {filename!r} does not exist; check the path '
                              '(or override it, e.g. with --cfg-options)')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError) as err:
        raise CheckpointError(f'{filename!r} is not a readable PyTorch checkpoint (truncated, '
                              f'corrupt or another format): {err}') from err
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


def _describe(keys: List[str], limit: int = 10) -> str:
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def match_backbone_weights(backbone: nn.Module, weights: Dict[str, torch.Tensor],
                           filename: str, min_matched: float = 0.9) -> Tuple[List[str], List[str]]:
    """Check that ``weights`` fit ``backbone``; returns (missing, unexpected) keys.

    Position biases of another pretraining resolution count as matching (they are resized on
    loading). Raises :class:`CheckpointError` on any other shape mismatch, or when fewer than
    ``min_matched`` of the backbone's tensors are found: a wrong file must not leave a randomly
    initialised backbone behind a warning.
    """
    own = backbone.state_dict()
    mismatched = []
    for key, value in weights.items():
        if key in own and value.shape != own[key].shape:
            resizable = key.endswith('position_bias') and value.shape[0] == own[key].shape[0]
            if not resizable:
                mismatched.append(f'{key}: checkpoint {tuple(value.shape)} vs model '
                                  f'{tuple(own[key].shape)}')
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    matched = len(own) - len(missing) - len(mismatched)
    if mismatched or matched < min_matched * len(own):
        lines = [f'{filename!r} does not fit this {type(backbone).__name__} backbone: '
                 f'{matched} of its {len(own)} tensors matched.']
        if mismatched:
            lines.append(f'shape mismatches ({len(mismatched)}): {_describe(mismatched)}')
        if missing:
            lines.append(f'missing ({len(missing)}): {_describe(missing)}')
        if unexpected:
            lines.append(f'unexpected ({len(unexpected)}): {_describe(unexpected)}')
        lines.append('Is it a checkpoint of the same variant (arch)? A detector checkpoint '
                     'belongs in load_from, not in the backbone init_cfg.')
        raise CheckpointError('\n'.join(lines))
    return missing, unexpected


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
