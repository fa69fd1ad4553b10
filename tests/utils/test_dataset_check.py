"""cmt_mm.utils.dataset_check: missing data is named before any dataset is built."""
import os.path as osp

import pytest
from mmengine.config import Config

from cmt_mm.utils.dataset_check import (DatasetNotFoundError, check_data_exists,
                                        dataset_paths, leaf_datasets)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RETINANET = osp.join(REPO, 'configs', 'retinanet_cmt_ti_1x_coco.py')


@pytest.fixture(scope='module', autouse=True)
def environment():
    """As tools/train.py does before it resolves dataset types through the registries."""
    from cmt_mm.utils.compat import setup_environment
    setup_environment(detection=True)


def make_coco_layout(root, split='train2017'):
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    (root / 'annotations' / f'instances_{split}.json').write_text('{}')
    (root / split).mkdir(exist_ok=True)


def coco_config(data_root):
    """The shipped RetinaNet config with every split read from ``data_root``."""
    cfg = Config.fromfile(RETINANET, import_custom_modules=False)
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(data_root) + '/'
    for split in ('val', 'test'):
        cfg[f'{split}_evaluator'].ann_file = osp.join(
            str(data_root), 'annotations', 'instances_val2017.json')
    return cfg


def error_of(cfg, phases):
    with pytest.raises(DatasetNotFoundError) as info:
        check_data_exists(cfg, phases)
    message = str(info.value)
    assert '\n' not in message  # the tools print it as one line
    return message


def test_complete_coco_layout_passes(tmp_path):
    make_coco_layout(tmp_path, 'train2017')
    make_coco_layout(tmp_path, 'val2017')
    check_data_exists(coco_config(tmp_path), ['train', 'val', 'test'])


def test_missing_coco_root_names_path_layout_and_overrides(tmp_path):
    root = tmp_path / 'no_coco'
    message = error_of(coco_config(root), ['train'])
    assert message.startswith('train_dataloader.dataset (CocoDataset): data_root not found: '
                              f'{root}/;'), message
    assert '<data_root>/annotations/instances_train2017.json' in message
    assert '<data_root>/train2017/*.jpg' in message
    assert '--cfg-options train_dataloader.dataset.data_root=DIR' in message
    # The root was set on the command line, not through COCO_ROOT.
    assert 'COCO_ROOT' not in message


def test_shipped_config_names_coco_root_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/coco/ does not exist here
    monkeypatch.delenv('COCO_ROOT', raising=False)
    cfg = Config.fromfile(RETINANET, import_custom_modules=False)
    message = error_of(cfg, ['train'])
    assert f'data_root not found: data/coco/ (relative to {tmp_path})' in message
    assert 'the COCO_ROOT environment variable' in message

    monkeypatch.setenv('COCO_ROOT', str(tmp_path / 'elsewhere') + '/')
    cfg = Config.fromfile(RETINANET, import_custom_modules=False)
    message = error_of(cfg, ['train'])
    assert f'data_root not found: {tmp_path}/elsewhere/;' in message
    assert 'the COCO_ROOT environment variable' in message


@pytest.mark.parametrize('missing, field', [
    ('annotations/instances_train2017.json', 'ann_file'),
    ('train2017', 'data_prefix.img'),
])
def test_missing_part_of_coco_layout(tmp_path, missing, field):
    make_coco_layout(tmp_path)
    (tmp_path / missing).rename(tmp_path / 'moved_away')
    message = error_of(coco_config(tmp_path), ['train'])
    assert f'{field} not found: {tmp_path}/{missing}' in message, message
    assert f'--cfg-options train_dataloader.dataset.{field}=' in message


def test_only_requested_phases_are_checked(tmp_path):
    make_coco_layout(tmp_path, 'train2017')  # no val2017
    cfg = coco_config(tmp_path)
    check_data_exists(cfg, ['train'])
    message = error_of(cfg, ['train', 'val'])
    assert message.startswith('val_dataloader.dataset (CocoDataset): ann_file not found: '
                              f'{tmp_path}/annotations/instances_val2017.json;'), message
    assert '<data_root>/val2017/*.jpg' in message


def test_missing_evaluator_annotations(tmp_path):
    make_coco_layout(tmp_path, 'val2017')
    cfg = coco_config(tmp_path)
    cfg.test_evaluator.ann_file = str(tmp_path / 'gone.json')
    message = error_of(cfg, ['test'])
    assert message.startswith(f'test_evaluator: ann_file not found: {tmp_path}/gone.json')
    assert '--cfg-options test_evaluator.ann_file=FILE' in message

    cfg.test_evaluator = [dict(type='mmdet.CocoMetric', ann_file=str(tmp_path / 'gone.json'))]
    assert error_of(cfg, ['test']).startswith('test_evaluator.0: ann_file not found')


def classification_config(dataset, **extra):
    return Config(dict(default_scope='mmpretrain', train_dataloader=dict(dataset=dataset),
                       **extra))


def test_custom_dataset_folder_layout(tmp_path):
    (tmp_path / 'train' / 'cat').mkdir(parents=True)
    dataset = dict(type='CustomDataset', data_root=str(tmp_path), data_prefix='train')
    check_data_exists(classification_config(dataset), ['train'])

    dataset['data_prefix'] = 'training'
    message = error_of(classification_config(dataset), ['train'])
    assert message.startswith('train_dataloader.dataset (CustomDataset): data_prefix.img_path '
                              f'not found: {tmp_path}/training;'), message
    assert 'one folder per class' in message


def test_subclass_of_custom_dataset_gets_its_layout(tmp_path):
    dataset = dict(type='ImageNet', data_root=str(tmp_path / 'imagenet'), split='train')
    message = error_of(classification_config(dataset), ['train'])
    assert f'(ImageNet): data_root not found: {tmp_path}/imagenet;' in message
    assert 'one folder per class' in message


def test_missing_annotation_list_of_classification_dataset(tmp_path):
    dataset = dict(type='CustomDataset', data_root=str(tmp_path), ann_file='meta/train.txt')
    message = error_of(classification_config(dataset), ['train'])
    assert f'ann_file not found: {tmp_path}/meta/train.txt' in message


def test_datasets_that_download_themselves(tmp_path):
    root = str(tmp_path / 'cifar')
    # mmpretrain's CIFAR10 downloads into data_root unless download=False.
    check_data_exists(classification_config(dict(type='CIFAR10', data_root=root)), ['train'])
    dataset = dict(type='CIFAR10', data_root=root, download=False)
    message = error_of(classification_config(dataset), ['train'])
    assert f'(CIFAR10): data_root not found: {root};' in message


def test_wrapped_datasets_are_unwrapped(tmp_path):
    make_coco_layout(tmp_path)
    good = dict(type='CocoDataset', data_root=str(tmp_path),
                ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'))
    bad = dict(good, data_prefix=dict(img='val2017/'))
    dataset = dict(type='RepeatDataset', times=2, dataset=dict(
        type='ConcatDataset', datasets=[good, dict(type='ClassBalancedDataset',
                                                   oversample_thr=0.1, dataset=bad)]))
    cfg = Config(dict(default_scope='mmdet', train_dataloader=dict(dataset=dataset)))
    message = error_of(cfg, ['train'])
    assert message.startswith('train_dataloader.dataset.dataset.datasets.1.dataset '
                              f'(CocoDataset): data_prefix.img not found: {tmp_path}/val2017/')

    keys = [key for key, _ in leaf_datasets(dataset, 'd')]
    assert keys == ['d.dataset.datasets.0', 'd.dataset.datasets.1.dataset']


def test_paths_resolve_like_mmengine_base_dataset():
    from mmengine.dataset import BaseDataset

    config = dict(data_root='root', ann_file='ann.json',
                  data_prefix=dict(img='imgs/', seg='/abs/seg', depth='', remote='s3://b/x'))
    paths = dict(dataset_paths(config))
    dataset = BaseDataset(lazy_init=True, **config)
    assert paths == {'data_root': 'root', 'ann_file': dataset.ann_file,
                     'data_prefix.img': dataset.data_prefix['img'],
                     'data_prefix.seg': dataset.data_prefix['seg']}
    assert paths['ann_file'] == 'root/ann.json' and paths['data_prefix.img'] == 'root/imgs/'
    # Without a data_root, relative paths are used as they are.
    assert dict(dataset_paths(dict(ann_file='a.json', data_prefix='imgs'))) == {
        'ann_file': 'a.json', 'data_prefix.img_path': 'imgs'}


def test_remote_storage_is_not_checked():
    dataset = dict(type='CocoDataset', data_root='data/none/', ann_file='a.json',
                   backend_args=dict(backend='petrel'))
    check_data_exists(Config(dict(default_scope='mmdet',
                                  train_dataloader=dict(dataset=dataset))), ['train'])
