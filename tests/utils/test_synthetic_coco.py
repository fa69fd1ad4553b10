"""The synthetic shapes dataset is valid COCO, exact, held out and reproducible."""
import filecmp
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from cmt_mm.utils.synthetic_coco import CLASSES, is_valid_dataset, make_shapes_coco

SETTINGS = dict(num_train=12, num_val=6, image_size=64, seed=3)
# pycocotools 2.0.11 with numpy 2 warns on every mask it decodes.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    return root, make_shapes_coco(str(root), **SETTINGS)


def load(paths, split):
    return COCO(paths[f'{split}_ann'])


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_fields(dataset, split):
    _, paths = dataset
    coco = load(paths, split)
    size = SETTINGS['image_size']

    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == SETTINGS[f'num_{split}']
    for img in coco.loadImgs(coco.getImgIds()):
        with Image.open(os.path.join(paths[f'{split}_images'], img['file_name'])) as im:
            assert im.size == (img['width'], img['height']) == (size, size)
            assert im.mode == 'RGB'
        assert coco.getAnnIds(imgIds=img['id']), 'every image has objects'

    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann['bbox']
        assert ann['iscrowd'] == 0
        assert ann['category_id'] in coco.getCatIds()
        assert 0 <= x and 0 <= y and x + w <= size and y + h <= size and w > 2 and h > 2
        assert 0 < ann['area'] <= w * h
        assert isinstance(ann['segmentation'], list) and len(ann['segmentation'][0]) >= 6


@pytest.mark.parametrize('split', ['train', 'val'])
def test_masks_inside_boxes(dataset, split):
    _, paths = dataset
    coco = load(paths, split)
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        # Rasterising may touch the pixel that holds the box edge.
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= np.ceil(x + w)
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= np.ceil(y + h)
        # The area is the polygon's; its rasterisation differs by the edge pixels.
        assert mask.sum() == pytest.approx(ann['area'], rel=0.2)


def test_objects_do_not_overlap(dataset):
    """The polygons are the visible objects, so no object may cover another."""
    _, paths = dataset
    coco = load(paths, 'train')
    for img_id in coco.getImgIds():
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))]
        assert np.sum(masks, axis=0).max() <= 1


def test_val_is_held_out(dataset):
    _, paths = dataset
    train = {open(os.path.join(paths['train_images'], f), 'rb').read()
             for f in os.listdir(paths['train_images'])}
    val = {open(os.path.join(paths['val_images'], f), 'rb').read()
           for f in os.listdir(paths['val_images'])}
    assert not train & val


def test_deterministic(dataset, tmp_path):
    root, paths = dataset
    again = make_shapes_coco(str(tmp_path), **SETTINGS)
    for key in ('train_ann', 'val_ann'):
        assert filecmp.cmp(paths[key], again[key], shallow=False)
    for split in ('train', 'val'):
        names = sorted(os.listdir(paths[f'{split}_images']))
        match, mismatch, errors = filecmp.cmpfiles(
            paths[f'{split}_images'], again[f'{split}_images'], names, shallow=False)
        assert match == names and not mismatch and not errors


def test_other_seed_differs(dataset, tmp_path):
    _, paths = dataset
    other = make_shapes_coco(str(tmp_path), **dict(SETTINGS, seed=4))
    with open(paths['train_ann']) as a, open(other['train_ann']) as b:
        assert json.load(a)['annotations'] != json.load(b)['annotations']


def test_is_valid_dataset(dataset):
    root, paths = dataset
    assert is_valid_dataset(str(root), **SETTINGS)
    assert not is_valid_dataset(str(root), **dict(SETTINGS, num_train=13))
    assert not is_valid_dataset(str(root / 'missing'), **SETTINGS)


def test_is_valid_dataset_misses_images(tmp_path):
    paths = make_shapes_coco(str(tmp_path), **SETTINGS)
    os.remove(os.path.join(paths['val_images'], '000001.jpg'))
    assert not is_valid_dataset(str(tmp_path), **SETTINGS)
