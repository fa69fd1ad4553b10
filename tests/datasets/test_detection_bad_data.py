"""A COCO dataset full of awkward cases trains and evaluates a CMT detector to the end.

The images: grayscale, RGBA and 16-bit PNGs, an EXIF-rotated JPEG, a truncated JPEG, sizes that
are not multiples of 32, 20x20 (under CMT's 32 px), 2000x40, 2000x4 and 4x2000 (which Resize
would scale to 1 and 0 px at 64, were they not padded when loaded), one without objects. The
annotations: zero-area, outside and partly outside boxes, a crowd region, category ids that are
not contiguous. tools/train.py trains the shapes demo's Mask R-CNN (configs/demo/, which takes
its data pipelines from the shipped COCO base) for one epoch at 64 px and evaluates it with
COCO mAP; the truncated image is skipped in training and scored as a black image in
evaluation, with warnings naming it.
"""
import json
import math
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image
from pycocotools import mask as mask_utils

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
DEMO = osp.join(REPO, 'configs', 'demo', 'mask_rcnn_cmt_shapes.py')
# The demo's classes, under category ids that are not 1..4.
CATEGORY_IDS = {'circle': 3, 'square': 7, 'triangle': 12, 'star': 40}
EXIF_ORIENTATION = 0x0112
# pycocotools 2.0.11 with numpy 2 warns on every mask it decodes.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

SMALL_RUN = """
_base_ = {demo!r}
data_root = {data_root!r}
scale = (64, 64)

# An untrained detector scores every box below mmdet's threshold of 0.05, and CocoMetric
# reports nothing for an empty result. Fewer proposals and RoIs: faster, nothing else changes.
model = dict(
    train_cfg=dict(rpn_proposal=dict(nms_pre=100, max_per_img=50),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=50), rcnn=dict(score_thr=0.0, max_per_img=10)))
dataset = dict(data_root=data_root, ann_file='annotations.json', data_prefix=dict(img='images/'))
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(dataset, pipeline=[dict(t, scale=scale) if t.type == 'Resize' else t
                                    for t in _base_.train_dataloader.dataset.pipeline]))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(dataset, pipeline=[dict(t, scale=scale) if t.type == 'Resize' else t
                                    for t in _base_.val_dataloader.dataset.pipeline]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=None)
"""


def picture(height, width, boxes, seed):
    """Noise with a filled rectangle per box (x, y, w, h), as RGB."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for x, y, w, h in boxes:
        rgb[max(int(y), 0):int(y + h), max(int(x), 0):int(x + w)] = rng.integers(150, 256, 3)
    return rgb


def box_annotation(box, category, iscrowd=0, area=None):
    x, y, w, h = box
    return dict(bbox=list(box), category_id=CATEGORY_IDS[category], iscrowd=iscrowd,
                area=w * h if area is None else area,
                segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]])


def crowd_annotation(box, height, width, category):
    x, y, w, h = box
    region = np.zeros((height, width), np.uint8, order='F')
    region[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(region)
    rle['counts'] = rle['counts'].decode()
    return dict(bbox=list(box), category_id=CATEGORY_IDS[category], iscrowd=1, area=w * h,
                segmentation=rle)


def write_dataset(root):
    """Images under root/images, their annotations in root/annotations.json."""
    (root / 'images').mkdir()
    images, annotations = [], []

    def add(name, height, width, anns, save):
        image_id = len(images) + 1
        images.append(dict(id=image_id, file_name=name, height=height, width=width))
        for ann in anns:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
        save(root / 'images' / name)

    def plain(height, width, boxes, seed, mode=None):
        image = Image.fromarray(picture(height, width, boxes, seed))
        return lambda path: (image.convert(mode) if mode else image).save(path)

    shape = [(8, 8, 24, 20)]
    add('plain_zero_area.jpg', 64, 64,
        [box_annotation(shape[0], 'square'), box_annotation((40, 40, 0, 6), 'circle'),
         box_annotation((30, 30, 10, 10), 'star', area=0)], plain(64, 64, shape, 0))
    add('plain_outside.jpg', 64, 64,
        [box_annotation(shape[0], 'circle'), box_annotation((100, 90, 10, 10), 'square'),
         box_annotation((50, 20, 30, 20), 'triangle')],  # 16 of 30 px inside
        plain(64, 64, shape + [(50, 20, 30, 20)], 1))
    add('plain_crowd.jpg', 64, 64,
        [box_annotation(shape[0], 'star'), crowd_annotation((36, 36, 20, 20), 64, 64, 'circle')],
        plain(64, 64, shape + [(36, 36, 20, 20)], 2))
    add('plain.jpg', 64, 64, [box_annotation((20, 10, 30, 40), 'triangle')],
        plain(64, 64, [(20, 10, 30, 40)], 3))
    add('gray.png', 48, 64, [box_annotation((10, 10, 30, 20), 'square')],
        plain(48, 64, [(10, 10, 30, 20)], 4, mode='L'))
    add('rgba.png', 70, 50, [box_annotation((5, 20, 30, 30), 'circle')],
        plain(70, 50, [(5, 20, 30, 30)], 5, mode='RGBA'))
    deep = (picture(60, 60, [(15, 15, 30, 30)], 6)[..., 0].astype(np.uint16) * 257)
    add('deep16.png', 60, 60, [box_annotation((15, 15, 30, 30), 'star')],
        lambda path: Image.fromarray(deep).save(path))
    # Stored 80 wide and 40 high, shown (and annotated) upright, 40 wide and 80 high.
    upright = picture(80, 40, [(5, 40, 30, 30)], 7)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # turn 90 degrees clockwise to show
    add('exif_rotated.jpg', 80, 40, [box_annotation((5, 40, 30, 30), 'square')],
        lambda path: Image.fromarray(np.rot90(upright).copy()).save(path, exif=exif.tobytes()))

    def truncated(path):
        plain(64, 64, shape, 8)(path)
        path.write_bytes(path.read_bytes()[:600])
    add('truncated.jpg', 64, 64, [box_annotation(shape[0], 'circle')], truncated)
    add('tiny.png', 20, 20, [box_annotation((4, 4, 12, 12), 'triangle')],
        plain(20, 20, [(4, 4, 12, 12)], 9))
    add('wide.png', 40, 2000, [box_annotation((900, 5, 200, 30), 'square')],
        plain(40, 2000, [(900, 5, 200, 30)], 10))
    add('odd_size.png', 45, 70, [box_annotation((10, 5, 40, 30), 'star')],
        plain(45, 70, [(10, 5, 40, 30)], 11))
    add('thin_wide.png', 4, 2000, [box_annotation((900, 0, 200, 4), 'circle')],
        plain(4, 2000, [(900, 0, 200, 4)], 13))
    add('thin_tall.png', 2000, 4, [box_annotation((0, 900, 4, 200), 'star')],
        plain(2000, 4, [(0, 900, 4, 200)], 14))
    add('no_objects.jpg', 64, 64, [], plain(64, 64, [], 12))

    categories = [dict(id=i, name=name) for name, i in CATEGORY_IDS.items()]
    (root / 'annotations.json').write_text(json.dumps(
        dict(images=images, annotations=annotations, categories=categories)))
    return {img['file_name']: img for img in images}


@pytest.fixture(scope='module')
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('awkward_coco')
    images = write_dataset(root)
    config = root / 'small_shapes.py'
    config.write_text(SMALL_RUN.format(demo=DEMO, data_root=str(root) + '/'))
    return config, images


def build_dataset(config, split):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    return DATASETS.build(Config.fromfile(config)[f'{split}_dataloader'].dataset)


def test_training_set_keeps_small_images_and_drops_only_empty_ones(small_run):
    config, images = small_run
    dataset = build_dataset(config, 'train')
    names = [osp.basename(dataset.get_data_info(i)['img_path']) for i in range(len(dataset))]
    # mmdet drops images without objects; under 32 px it would drop them too (min_size=32).
    assert sorted(names) == sorted(set(images) - {'no_objects.jpg'})
    instances = {name: dataset.get_data_info(i)['instances'] for i, name in enumerate(names)}
    # Zero-area and outside boxes are dropped, the crowd region is kept as ignored.
    assert len(instances['plain_zero_area.jpg']) == 1
    assert len(instances['plain_outside.jpg']) == 2
    assert [ann['ignore_flag'] for ann in instances['plain_crowd.jpg']] == [0, 1]
    # Labels follow the classes' order, whatever the category ids.
    assert instances['plain_crowd.jpg'][0]['bbox_label'] == 3  # 'star', id 40


def test_evaluation_pipeline_gives_every_image_upright_at_its_annotated_size(small_run):
    config, images = small_run
    dataset = build_dataset(config, 'val')
    assert len(dataset) == len(images)
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        info = images[osp.basename(sample.img_path)]
        # Over 32 times as long as wide, padded (at the bottom or right) to 1/32 of the length.
        short_side = math.ceil(max(info['height'], info['width']) / 32)
        assert sample.ori_shape == (max(info['height'], short_side),
                                    max(info['width'], short_side)), sample.img_path
        height, width = sample.img_shape
        assert max(height, width) == 64 and min(height, width) >= 2  # 1 px fails once flipped


def test_one_epoch_and_coco_evaluation_finish(small_run, tmp_path):
    config, _ = small_run
    work_dir = tmp_path / 'work'
    proc = subprocess.run([sys.executable, TRAIN, str(config), '--work-dir', str(work_dir)],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]

    truncated = osp.join(osp.dirname(config), 'images', 'truncated.jpg')
    warnings = [line for line in log.splitlines() if 'WARNING' in line and truncated in line]
    assert any('skipped, another sample is loaded' in line for line in warnings), warnings
    assert any('a black image stands in' in line for line in warnings), warnings
    for name in ('wide.png', 'thin_wide.png', 'thin_tall.png'):
        thin = osp.join(osp.dirname(config), 'images', name)
        assert any(thin in line and 'padded with black' in line for line in log.splitlines())

    scalars = list(work_dir.glob('*/vis_data/scalars.json'))
    assert len(scalars) == 1
    records = [json.loads(line) for line in scalars[0].read_text().splitlines()]
    losses = [{k: v for k, v in r.items() if k.startswith('loss')} for r in records if 'loss' in r]
    assert len(losses) >= 3 and all(len(terms) > 1 for terms in losses)
    assert all(math.isfinite(v) for terms in losses for v in terms.values()), losses
    metrics = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(metrics) == 1, records[-3:]
    for metric in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert isinstance(metrics[0].get(metric), float) and metrics[0][metric] >= 0, metrics
