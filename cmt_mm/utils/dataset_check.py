"""Check, before a runner is built, that the data a config reads exists.

Without this check a missing dataset surfaces deep inside the dataset's constructor
(pycocotools' ``open``, mmpretrain's folder scan) as a traceback that names neither the
config key nor the expected layout. :func:`check_data_exists` reads only the config:
``data_root``, ``ann_file`` and ``data_prefix`` of every dataset a phase uses (inside
wrappers such as ``RepeatDataset`` or ``ConcatDataset`` too), resolved against
``data_root`` as mmengine's ``BaseDataset`` does, and the ``ann_file`` of the phase's
evaluators.
"""
import inspect
import os
import os.path as osp
import re
from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ['DatasetNotFoundError', 'check_data_exists', 'leaf_datasets', 'dataset_paths']

# mmengine's `{{$NAME:DEFAULT}}` config syntax for values taken from the environment.
_ENV_VARIABLE = re.compile(r"\{\{['\"]?\s*\$(\w+)\s*:\s*(\S*?)\s*['\"]?\}\}")


class DatasetNotFoundError(FileNotFoundError):
    """A path a dataset config reads does not exist; the message says how to fix it."""


def leaf_datasets(dataset_cfg: dict, key: str) -> Iterator[Tuple[str, dict]]:
    """Yield ``(config key, dataset config)`` of the datasets inside dataset wrappers.

    ``RepeatDataset``, ``ClassBalancedDataset``, mmdet's ``MultiImageMixDataset`` ... wrap
    one dataset under ``dataset``; ``ConcatDataset`` wraps a list under ``datasets``.
    """
    inner = dataset_cfg.get('dataset')
    inner_list = dataset_cfg.get('datasets')
    if isinstance(inner, dict):
        yield from leaf_datasets(inner, f'{key}.dataset')
    elif isinstance(inner_list, (list, tuple)):
        for i, cfg in enumerate(inner_list):
            if isinstance(cfg, dict):
                yield from leaf_datasets(cfg, f'{key}.datasets.{i}')
    else:
        yield key, dataset_cfg


def _is_local(path: str) -> bool:
    return '://' not in path


def dataset_paths(dataset_cfg: dict) -> List[Tuple[str, str]]:
    """The local paths a dataset config reads, as ``(config field, resolved path)``.

    Relative ``ann_file`` and ``data_prefix`` values are joined to ``data_root`` as
    mmengine's ``BaseDataset._join_prefix`` does; a string ``data_prefix`` means
    ``dict(img_path=...)`` as in mmpretrain. Empty values and URLs are left out.
    """
    data_root = dataset_cfg.get('data_root') or ''

    def resolve(path: str) -> str:
        # mmpretrain expands '~' in ann_file and data_prefix (not in data_root).
        path = osp.expanduser(path)
        return osp.join(data_root, path) if data_root and not osp.isabs(path) else path

    paths = []
    if data_root:
        paths.append(('data_root', data_root))
    ann_file = dataset_cfg.get('ann_file')
    if isinstance(ann_file, str) and ann_file:
        paths.append(('ann_file', resolve(ann_file)))
    data_prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(data_prefix, str):
        data_prefix = dict(img_path=data_prefix)
    for name, prefix in data_prefix.items():
        if isinstance(prefix, str) and prefix:
            paths.append((f'data_prefix.{name}', resolve(prefix)))
    return [(field, path) for field, path in paths if _is_local(path)]


def _dataset_class(dataset_cfg: dict, default_scope: Optional[str]) -> Optional[type]:
    """The class a dataset config builds, looked up as the Runner will (None if unknown)."""
    from mmengine.registry import DATASETS

    dataset_type = dataset_cfg.get('type')
    if isinstance(dataset_type, type):
        return dataset_type
    scope = dataset_cfg.get('_scope_', default_scope)
    if not isinstance(dataset_type, str) or scope is None:
        return None
    with DATASETS.switch_scope_and_registry(scope) as registry:
        return registry.get(dataset_type)


def _derives_from(cls: Optional[type], qualified_name: str) -> bool:
    # By name, so that a classification run does not import mmdet (nor the reverse).
    return cls is not None and any(
        f'{base.__module__}.{base.__qualname__}' == qualified_name for base in cls.__mro__)


def _downloads_itself(dataset_cfg: dict, cls: Optional[type]) -> bool:
    """mmpretrain's CIFAR, MNIST, ... fetch missing data when ``download`` is true."""
    if 'download' in dataset_cfg:
        return bool(dataset_cfg['download'])
    if cls is None:
        return False
    param = inspect.signature(cls.__init__).parameters.get('download')
    return param is not None and param.default is True


def _reads_remote_storage(dataset_cfg: dict) -> bool:
    # A petrel/http backend maps local-looking paths to remote storage.
    backend_args = dataset_cfg.get('backend_args') or {}
    return backend_args.get('backend', 'local') != 'local'


def _under_root(path: str, data_root: str) -> str:
    """``path`` written relative to ``<data_root>`` when it lies below it."""
    if data_root and path.startswith(data_root):
        return osp.join('<data_root>', path[len(data_root):].lstrip('/'))
    return path


def _layout(dataset_cfg: dict, cls: Optional[type]) -> str:
    """The layout a dataset family expects, in the config's own names ('' if unknown)."""
    data_root = dataset_cfg.get('data_root') or ''
    paths = dict(dataset_paths(dataset_cfg))
    if _derives_from(cls, 'mmdet.datasets.coco.CocoDataset'):
        ann_file = _under_root(paths.get('ann_file', '<ann_file>'), data_root)
        images = _under_root(paths.get('data_prefix.img', data_root or '<images>'), data_root)
        return (f'{cls.__name__} expects the COCO layout: {ann_file} (COCO-format '
                f'annotations) and {osp.join(images, "*.jpg")}')
    if _derives_from(cls, 'mmpretrain.datasets.custom.CustomDataset'):
        return (f'{cls.__name__} reads images from one folder per class '
                '(<data_root>/<data_prefix>/<class>/<image>) or those listed in an ann_file '
                "with one '<image path> <label>' per line")
    return ''


def _environment_variables_for(path: str, config_text: str) -> List[str]:
    """Environment variables through which the config set ``path`` (``{{$NAME:...}}``)."""
    names = []
    for name, default in _ENV_VARIABLE.findall(config_text):
        value = os.environ.get(name, default)
        if path.startswith(value) and name not in names:
            names.append(name)
    return names


def _describe(path: str) -> str:
    return path if osp.isabs(path) else f'{path} (relative to {os.getcwd()})'


def _fixes(key: str, field: str, path: str, data_root: str, config_text: str) -> str:
    """How to point the config at the data: env variables it reads, then --cfg-options."""
    fixes = []
    if data_root and path.startswith(data_root):
        fixes += [f'the {variable} environment variable (the config reads it)'
                  for variable in _environment_variables_for(data_root, config_text)]
        fixes.append(f'--cfg-options {key}.data_root=DIR')
    if field != 'data_root':
        fixes.append(f"--cfg-options {key}.{field}={'FILE' if field == 'ann_file' else 'DIR'}")
    return 'point the config at the data with ' + ' or '.join(fixes)


def _check_dataset(key: str, dataset_cfg: dict, cfg) -> None:
    cls = _dataset_class(dataset_cfg, cfg.get('default_scope'))
    if _downloads_itself(dataset_cfg, cls) or _reads_remote_storage(dataset_cfg):
        return
    for field, path in dataset_paths(dataset_cfg):
        if osp.exists(path):
            continue
        type_name = cls.__name__ if cls is not None else dataset_cfg.get('type')
        parts = [f'{key} ({type_name}): {field} not found: {_describe(path)}',
                 _layout(dataset_cfg, cls),
                 _fixes(key, field, path, dataset_cfg.get('data_root') or '', cfg.text)]
        raise DatasetNotFoundError('; '.join(part for part in parts if part))


def _check_evaluator(key: str, evaluator_cfg, cfg) -> None:
    """Evaluators such as mmdet's CocoMetric load their own copy of the annotations."""
    if isinstance(evaluator_cfg, (list, tuple)):
        metrics = [(f'{key}.{i}', metric) for i, metric in enumerate(evaluator_cfg)]
    else:
        metrics = [(key, evaluator_cfg)]
    for metric_key, metric in metrics:
        if not isinstance(metric, dict) or _reads_remote_storage(metric):
            continue
        ann_file = metric.get('ann_file')
        if isinstance(ann_file, str) and _is_local(ann_file) and not osp.exists(ann_file):
            fixes = [f'the {variable} environment variable (the config reads it)'
                     for variable in _environment_variables_for(ann_file, cfg.text)]
            fixes.append(f'--cfg-options {metric_key}.ann_file=FILE')
            raise DatasetNotFoundError(
                f'{metric_key}: ann_file not found: {_describe(ann_file)}; point the config '
                'at it with ' + ' or '.join(fixes))


def check_data_exists(cfg, phases: Sequence[str]) -> None:
    """Check the data of ``<phase>_dataloader`` and ``<phase>_evaluator`` for each phase.

    Args:
        cfg (mmengine.Config): The config, after ``--cfg-options`` were merged.
        phases: Some of 'train', 'val' and 'test'; phases without a dataloader are skipped.

    Raises:
        DatasetNotFoundError: naming the first missing path, the config key that set it,
            the layout the dataset expects and how to point the config elsewhere.
    """
    for phase in phases:
        dataloader = cfg.get(f'{phase}_dataloader')
        if not dataloader or not isinstance(dataloader.get('dataset'), dict):
            continue
        for key, dataset_cfg in leaf_datasets(dataloader['dataset'],
                                              f'{phase}_dataloader.dataset'):
            _check_dataset(key, dataset_cfg, cfg)
        if cfg.get(f'{phase}_evaluator'):
            _check_evaluator(f'{phase}_evaluator', cfg[f'{phase}_evaluator'], cfg)
