"""The datasets of the classification configs, read by mmpretrain from fixtures in their formats.

Each test writes a few samples in the dataset's own on-disk layout (the transfer datasets' release
formats, ImageNet-100's class folders), points the shipped config at them through its data-root
environment variable, builds the training and test sets from the config's settings and checks
the number of samples, the labels (0-based, in the release's class numbering) and one sample of
each split through the config's pipeline; the test sample also goes through the config's data
preprocessor, where a red image must arrive red (channel 0), whatever channel order the dataset
decodes to.
"""
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.models import ClsDataPreprocessor
from mmpretrain.registry import DATASETS
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
SIZE = 224  # every transfer config fine-tunes and tests at 224 x 224
RED = (255, 0, 0)


def write_jpeg(path: Path, color=None, seed=0) -> None:
    """A small JPEG (not square, so the resizing matters): a solid colour or noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    else:
        pixels = np.full((30, 40, 3), color, dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def savemat(path: Path, variables: dict) -> None:
    """A MATLAB 5 file, as the Flowers-102 and Stanford Cars releases ship."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), variables)


def mat_struct_array(records: list) -> np.ndarray:
    """A 1 x N MATLAB struct array (numbers as 1 x 1 matrices, strings as char arrays)."""
    fields = list(records[0])
    array = np.zeros((1, len(records)), dtype=[(name, 'O') for name in fields])
    for i, record in enumerate(records):
        array[0, i] = tuple(
            np.array([value]) if isinstance(value, str) else np.array([[value]], dtype=np.uint16)
            for value in record.values())
    return array


def build_splits(config_name: str, env_var: str, root: Path, monkeypatch):
    """The shipped config with its data root taken from ``env_var``, and its train/test sets."""
    monkeypatch.setenv(env_var, f'{root}/')
    cfg = Config.fromfile(CONFIGS / config_name)
    init_default_scope('mmpretrain')
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    test_set = DATASETS.build(cfg.test_dataloader.dataset)
    return cfg, train_set, test_set


def check_splits(cfg, train_set, test_set, num_classes, train_labels, test_labels):
    """Class count, sizes and labels; one sample of each split through its pipeline; the first
    test sample (always a red image) through the data preprocessor."""
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == num_classes
    if train_set.CLASSES is not None:  # mmpretrain 1.2.0 names no Flowers-102 classes
        assert len(train_set.CLASSES) == num_classes
    assert len(train_set) == len(train_labels) and len(test_set) == len(test_labels)
    assert train_set.get_gt_labels().tolist() == train_labels
    assert test_set.get_gt_labels().tolist() == test_labels

    train_sample = train_set[0]
    assert train_sample['inputs'].shape == (3, SIZE, SIZE)
    assert train_sample['data_samples'].gt_label.item() == train_labels[0]

    test_sample = test_set[0]
    assert test_sample['inputs'].shape == (3, SIZE, SIZE)
    assert test_sample['data_samples'].gt_label.item() == test_labels[0]
    preprocessor = ClsDataPreprocessor(**cfg.data_preprocessor)
    batch = preprocessor(
        dict(inputs=[test_sample['inputs']], data_samples=[test_sample['data_samples']]))
    red, green, blue = batch['inputs'][0].mean(dim=(1, 2)).tolist()
    # 255 and 0 normalised with ImageNet's statistics: about 2.2 and -2
    assert red > 2 and green < -1.5 and blue < -1.5, (red, green, blue)


# ---------------------------------------------------------------------------------------
# CIFAR: python pickles of N x 3072 uint8 rows (the R plane, then G, then B, row-major)
# ---------------------------------------------------------------------------------------


def cifar_rows(count: int, seed: int, first_red: bool = False) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
    if first_red:
        rows[0] = 0
        rows[0, :32 * 32] = 255
    return rows


def write_pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(entry, f, protocol=2)  # the release is a Python 2 pickle


def without_md5(monkeypatch, dataset_cls) -> None:
    """mmpretrain checks the files against the release's MD5 sums, which a fixture cannot have;
    everything else about the files is checked as for the real data."""
    for attr in ('train_list', 'test_list'):
        monkeypatch.setattr(dataset_cls, attr,
                            [[name, None] for name, _ in getattr(dataset_cls, attr)])


def write_cifar10(root: Path, train_labels, test_labels) -> None:
    """cifar-10-batches-py: the training labels spread over data_batch_1..5, then test_batch."""
    folder = root / 'cifar-10-batches-py'
    chunks = np.array_split(np.arange(len(train_labels)), 5)
    for number, chunk in enumerate(chunks, 1):
        write_pickle(folder / f'data_batch_{number}', {
            'batch_label': f'training batch {number} of 5',
            'labels': [train_labels[i] for i in chunk],
            'data': cifar_rows(len(chunk), seed=number),
            'filenames': [f'train_{i}.png' for i in chunk]})
    write_pickle(folder / 'test_batch', {
        'batch_label': 'testing batch 1 of 1',
        'labels': list(test_labels),
        'data': cifar_rows(len(test_labels), seed=0, first_red=True),
        'filenames': [f'test_{i}.png' for i in range(len(test_labels))]})
    write_pickle(folder / 'batches.meta', {
        'label_names': list(CIFAR10.METAINFO['classes']),
        'num_cases_per_batch': 10000, 'num_vis': 3 * 32 * 32})


def test_cifar10(tmp_path, monkeypatch):
    train_labels, test_labels = [0, 9, 3, 3, 5, 1, 8], [9, 0, 4]
    write_cifar10(tmp_path, train_labels, test_labels)
    without_md5(monkeypatch, CIFAR10)
    cfg, train_set, test_set = build_splits(
        'cmt_transfer/cmt-s_8xb64_cifar10.py', 'CIFAR10_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 10, train_labels, test_labels)


def test_cifar10_is_not_downloaded(tmp_path, monkeypatch):
    """The config reads a prepared copy: files that fail mmpretrain's MD5 check are an error
    telling how to get the data, not a silent download."""
    write_cifar10(tmp_path, [0] * 5, [0])
    with pytest.raises(RuntimeError, match='Cannot find CIFAR10 dataset.*download=True'):
        build_splits('cmt_transfer/cmt-s_8xb64_cifar10.py', 'CIFAR10_ROOT', tmp_path, monkeypatch)


def test_cifar100(tmp_path, monkeypatch):
    train_labels, test_labels = [99, 0, 42, 7], [3, 99]
    folder = tmp_path / 'cifar-100-python'
    for split, labels, seed in (('train', train_labels, 1), ('test', test_labels, 2)):
        write_pickle(folder / split, {
            'batch_label': f'{split}ing batch 1 of 1',
            'fine_labels': labels,
            'coarse_labels': [label // 5 for label in labels],
            'data': cifar_rows(len(labels), seed, first_red=split == 'test'),
            'filenames': [f'{split}_{i}.png' for i in range(len(labels))]})
    write_pickle(folder / 'meta', {
        'fine_label_names': list(CIFAR100.METAINFO['classes']),
        'coarse_label_names': [f'superclass_{i}' for i in range(20)]})
    without_md5(monkeypatch, CIFAR100)
    cfg, train_set, test_set = build_splits(
        'cmt_transfer/cmt-s_8xb64_cifar100.py', 'CIFAR100_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 100, train_labels, test_labels)


# ---------------------------------------------------------------------------------------
# Image-file datasets
# ---------------------------------------------------------------------------------------


def test_flowers102(tmp_path, monkeypatch):
    """jpg/image_%05d.jpg, imagelabels.mat (1-based labels of all images) and setid.mat (1-based
    image ids of the train, val and test splits); training uses train + val."""
    labels = [3, 102, 1, 50, 7, 1, 64]  # of images 1..7
    split_ids = dict(trnid=[2, 1], valid=[4, 3], tstid=[5, 7, 6])
    for image_id in range(1, len(labels) + 1):
        write_jpeg(tmp_path / 'jpg' / f'image_{image_id:05d}.jpg',
                   color=RED if image_id == split_ids['tstid'][0] else None, seed=image_id)
    # The release's types: 1 x N uint8 labels, 1 x N uint16 ids
    savemat(tmp_path / 'imagelabels.mat', {'labels': np.array([labels], dtype=np.uint8)})
    savemat(tmp_path / 'setid.mat',
            {name: np.array([ids], dtype=np.uint16) for name, ids in split_ids.items()})
    cfg, train_set, test_set = build_splits(
        'cmt_transfer/cmt-s_8xb64_flowers102.py', 'FLOWERS102_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 102, train_labels=[101, 2, 49, 0],
                 test_labels=[6, 63, 0])


def test_oxford_pets(tmp_path, monkeypatch):
    """images/<name>.jpg and annotations/{trainval,test}.txt lines `name class species breed`
    (class 1..37)."""
    trainval = [('Abyssinian_12', 1, 1, 1), ('yorkshire_terrier_3', 37, 2, 25),
                ('american_bulldog_7', 2, 2, 1)]
    test = [('Bombay_40', 7, 1, 4), ('Abyssinian_2', 1, 1, 1)]
    for split, rows in (('trainval', trainval), ('test', test)):
        lines = [' '.join(str(field) for field in row) for row in rows]
        (tmp_path / 'annotations').mkdir(exist_ok=True)
        (tmp_path / 'annotations' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
        for i, row in enumerate(rows):
            write_jpeg(tmp_path / 'images' / f'{row[0]}.jpg',
                       color=RED if (split, i) == ('test', 0) else None, seed=row[1])
    cfg, train_set, test_set = build_splits(
        'cmt_transfer/cmt-s_8xb64_oxford-pets.py', 'OXFORD_PETS_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 37, train_labels=[0, 36, 1], test_labels=[6, 0])


CARS_TRAIN = [('00001.jpg', 14), ('00002.jpg', 196), ('00003.jpg', 1)]
CARS_TEST = [('00001.jpg', 101), ('00002.jpg', 3)]
BOX = dict(bbox_x1=2, bbox_y1=3, bbox_x2=30, bbox_y2=20)


def write_cars_in_one_file(root: Path) -> None:
    """car_ims/ and cars_annos.mat, whose records flag the test images."""
    records = []
    for is_test, rows in ((0, CARS_TRAIN), (1, CARS_TEST)):
        for i, (name, label) in enumerate(rows):
            path = f'car_ims/{"test" if is_test else "train"}_{name}'
            write_jpeg(root / path, color=RED if (is_test, i) == (1, 0) else None, seed=label)
            records.append(dict(relative_im_path=path, **BOX, **{'class': label},
                                test=is_test))
    savemat(root / 'cars_annos.mat', {'annotations': mat_struct_array(records)})


def write_cars_with_devkit(root: Path) -> None:
    """cars_train/, cars_test/ and the devkit's cars_{train_annos,test_annos_withlabels}.mat."""
    for folder, annotations, rows in (('cars_train', 'cars_train_annos', CARS_TRAIN),
                                      ('cars_test', 'cars_test_annos_withlabels', CARS_TEST)):
        for i, (name, label) in enumerate(rows):
            write_jpeg(root / folder / name,
                       color=RED if (folder, i) == ('cars_test', 0) else None, seed=label)
        records = [dict(**BOX, **{'class': label}, fname=name) for name, label in rows]
        savemat(root / 'devkit' / f'{annotations}.mat',
                {'annotations': mat_struct_array(records)})


@pytest.mark.parametrize('write_layout', [write_cars_in_one_file, write_cars_with_devkit])
def test_stanford_cars(write_layout, tmp_path, monkeypatch):
    write_layout(tmp_path)
    cfg, train_set, test_set = build_splits(
        'cmt_transfer/cmt-s_8xb64_stanford-cars.py', 'STANFORD_CARS_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 196,
                 train_labels=[label - 1 for _, label in CARS_TRAIN],
                 test_labels=[label - 1 for _, label in CARS_TEST])


def test_imagenet100(tmp_path, monkeypatch):
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, 100 folders each (some empty here); the label
    is the folder's rank."""
    files = dict(train=[(0, 'a'), (0, 'b'), (42, 'c'), (99, 'd')], val=[(0, 'e'), (99, 'f')])
    for split, images in files.items():
        for index in range(100):
            (tmp_path / split / f'n{index:08d}').mkdir(parents=True)
        for i, (index, name) in enumerate(images):
            write_jpeg(tmp_path / split / f'n{index:08d}' / f'{name}.JPEG',
                       color=RED if (split, i) == ('val', 0) else None, seed=i)
    cfg, train_set, test_set = build_splits(
        'cmt/cmt-s_8xb128_in100.py', 'IMAGENET100_ROOT', tmp_path, monkeypatch)
    check_splits(cfg, train_set, test_set, 100, train_labels=[0, 0, 42, 99],
                 test_labels=[0, 99])
