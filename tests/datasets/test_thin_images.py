"""Images far longer than wide (2000 x 4 pixels) train and evaluate through the shipped COCO
pipelines (configs/_base_/datasets/coco_instance.py) with boxes and masks in the right place.

mmdet's Resize scales the short side of such an image to 0 pixels at 128 x 128, and OpenCV
raises; cmt_mm.SafeLoadImageFromFile pads it with black at the bottom or right first. The
evaluation tests send predictions through mmdet's own box and mask heads, which take them back
with the padded image's scale_factor and paste masks on an image of ori_shape (the padded
size): perfect boxes must score 1 in COCO evaluation (a shift or a wrong scale scores less),
perfect masks cover exactly the object in the file's part of the padded size, and a box in the
padding must not fail. COCO's mask evaluation matches no mask of another size than the
annotated image's: cmt_mm.CocoMetric cuts the predictions back to it, mmdet's does not.
"""
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from PIL import Image
from pycocotools import mask as mask_utils

from cmt_mm.datasets import SafeLoadImageFromFile

REPO = Path(__file__).resolve().parents[2]
COCO_BASE = REPO / 'configs' / '_base_' / 'datasets' / 'coco_instance.py'
CLASSES = ('bar', 'post')
SHIPPED_SCALE = (1333, 800)
# pycocotools 2.0.11 with numpy 2 warns on every mask it decodes.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')


def polygon_annotation(box, category_id):
    x, y, w, h = box
    return dict(bbox=list(box), category_id=category_id, iscrowd=0, area=w * h,
                segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]])


def crowd_annotation(box, height, width, category_id, compressed):
    x, y, w, h = box
    region = np.zeros((height, width), np.uint8, order='F')
    region[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(region)
    if compressed:
        segmentation = dict(size=rle['size'], counts=rle['counts'].decode())
    else:  # as COCO stores crowd regions: run lengths, column by column
        flat = region.flatten(order='F')
        changes = np.flatnonzero(np.diff(flat)) + 1
        counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
        segmentation = dict(size=[height, width], counts=[0] * int(flat[0]) + counts)
    return dict(bbox=list(box), category_id=category_id, iscrowd=1, area=w * h,
                segmentation=segmentation)


# name -> (height, width, [(box, kind)]): a 2000 x 4 bar and a 4 x 2000 post.
IMAGES = {
    'wide.png': (4, 2000, [((900, 0, 200, 4), 'bar'), ((100, 0, 300, 4), 'crowd')]),
    'tall.png': (2000, 4, [((0, 500, 4, 300), 'post'), ((0, 1200, 4, 100), 'crowd_list')]),
}
# Padded to 1/32 of the long side.
PADDED = {'wide.png': (63, 2000), 'tall.png': (2000, 63)}


@pytest.fixture(scope='module')
def thin_coco(tmp_path_factory):
    """A COCO dataset of the two images, each object a bright rectangle on dark noise."""
    root = tmp_path_factory.mktemp('thin_coco')
    (root / 'images').mkdir()
    images, annotations = [], []
    for image_id, (name, (height, width, objects)) in enumerate(IMAGES.items(), start=1):
        rgb = np.random.default_rng(image_id).integers(0, 60, (height, width, 3), np.uint8)
        images.append(dict(id=image_id, file_name=name, height=height, width=width))
        for box, kind in objects:
            x, y, w, h = box
            rgb[y:y + h, x:x + w] = 250
            if kind.startswith('crowd'):
                ann = crowd_annotation(box, height, width, 1, compressed=kind == 'crowd')
            else:
                ann = polygon_annotation(box, CLASSES.index(kind) + 1)
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=image_id))
        Image.fromarray(rgb).save(root / 'images' / name)
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    (root / 'annotations.json').write_text(
        json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return root


def build_dataset(root, split, scale, **loader_options):
    """The shipped COCO base's dataset of ``split`` on ``root``, resized to ``scale``."""
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = Config.fromfile(COCO_BASE)[f'{split}_dataloader'].dataset
    pipeline = [dict(t, scale=scale) if t.type == 'Resize' else t for t in cfg.pipeline]
    pipeline[0].update(loader_options)
    return DATASETS.build(dict(
        cfg, data_root=str(root), ann_file='annotations.json', data_prefix=dict(img='images/'),
        metainfo=dict(classes=CLASSES), pipeline=pipeline))


def samples(dataset) -> dict:
    """File name -> (annotations, the pipeline's output)."""
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    return {Path(info['img_path']).name: (info, dataset[i]) for i, info in enumerate(infos)}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_without_padding_mmdet_resize_fails(thin_coco, split):
    """What the padding prevents: at 128 x 128 the 2000 x 4 image ends the run."""
    dataset = build_dataset(thin_coco, split, (128, 128), max_aspect_ratio=None)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'].endswith('wide.png'))
    with pytest.raises(cv2.error, match='inv_scale'):
        dataset[index]


def bounding_box(mask: np.ndarray) -> tuple:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


@pytest.mark.parametrize('scale', [(128, 128), SHIPPED_SCALE])
def test_training_samples_keep_image_boxes_and_masks_together(thin_coco, scale):
    for name, (_, sample) in samples(build_dataset(thin_coco, 'train', scale)).items():
        data = sample['data_samples']
        image = sample['inputs'].numpy()
        assert image.shape[1:] == data.img_shape and min(data.img_shape) >= 2, name
        for instances in (data.gt_instances, data.ignored_instances):
            assert instances.masks.masks.shape[1:] == data.img_shape, name
        if scale != SHIPPED_SCALE:
            continue  # at 128 the 4 px objects are under a pixel: only the shapes can agree
        (box,) = data.gt_instances.bboxes.tensor.numpy()
        (mask,) = data.gt_instances.masks.masks
        (crowd,) = data.ignored_instances.masks.masks
        x1, y1, x2, y2 = np.round(box).astype(int)
        # The mask covers the box (Resize rounds each to the pixel), the bright rectangle
        # lies under it, and the crowd region is elsewhere in the image.
        assert np.abs(np.array(bounding_box(mask)) - (x1, y1, x2, y2)).max() <= 1, name
        assert image[:, y1:y2, x1:x2].mean() > 200, name
        assert crowd.any() and not (crowd & mask).any(), name


def objects_in_input(info, meta):
    """(boxes, labels) of the annotated objects (not crowds), in the model's input coordinates
    (x1, y1, x2, y2), where the pipeline's scale_factor puts them."""
    objects = [i for i in info['instances'] if not i['ignore_flag']]
    boxes = torch.tensor([i['bbox'] for i in objects], dtype=torch.float32)
    labels = torch.tensor([i['bbox_label'] for i in objects])
    return boxes * torch.tensor(meta['scale_factor']).repeat(2), labels


def perfect_predictions(boxes: torch.Tensor, labels: torch.Tensor, meta: dict) -> dict:
    """Certain predictions of these boxes (input coordinates) and box-filling masks, taken back
    to the image's coordinates by mmdet's RoI box and mask heads, as Mask R-CNN's
    StandardRoIHead does."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    n, num_classes = len(boxes), len(CLASSES)
    scores = torch.full((n, num_classes + 1), -10.)
    scores[torch.arange(n), labels] = 10.
    test_cfg = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                          max_per_img=100, mask_thr_binary=0.5)
    (results, ) = BBoxHead(with_avg_pool=True, num_classes=num_classes).predict_by_feat(
        rois=(torch.cat([torch.zeros(n, 1), boxes], 1), ),
        cls_scores=(scores, ), bbox_preds=(torch.zeros(n, 4 * num_classes), ),
        batch_img_metas=[meta], rcnn_test_cfg=test_cfg, rescale=False)
    (results, ) = FCNMaskHead(num_classes=num_classes).predict_by_feat(
        mask_preds=(torch.full((n, num_classes, 28, 28), 10.), ),
        results_list=[results], batch_img_metas=[meta], rcnn_test_cfg=test_cfg, rescale=True)
    return dict(img_id=meta['img_id'], ori_shape=meta['ori_shape'],
                pred_instances=results.to_dict())


@pytest.mark.parametrize('scale', [(128, 128), SHIPPED_SCALE])
def test_evaluation_takes_perfect_predictions_back_to_the_file_coordinates(thin_coco, scale):
    from mmdet.evaluation import CocoMetric as MMDetCocoMetric

    from cmt_mm.evaluation import CocoMetric
    dataset = build_dataset(thin_coco, 'val', scale)
    metrics = [cls(ann_file=str(thin_coco / 'annotations.json'), metric=['bbox', 'segm'])
               for cls in (CocoMetric, MMDetCocoMetric)]
    for metric in metrics:
        metric.dataset_meta = dataset.metainfo
    for name, (info, sample) in samples(dataset).items():
        meta = sample['data_samples'].metainfo
        assert meta['ori_shape'] == PADDED[name], name
        boxes, labels = objects_in_input(info, meta)
        if scale == SHIPPED_SCALE:  # at 128 the 4 px objects are under a pixel
            x1, y1, x2, y2 = boxes[0].round().int().tolist()
            assert sample['inputs'][:, y1:y2, x1:x2].float().mean() > 200, name
        prediction = perfect_predictions(boxes, labels, meta)
        (mask, ) = prediction['pred_instances']['masks'].numpy()
        (x, y, w, h), _ = IMAGES[name][2][0]
        expected = np.zeros(PADDED[name], bool)
        expected[y:y + h, x:x + w] = True
        assert np.array_equal(mask, expected), name
        for metric in metrics:
            metric.process({}, [copy.deepcopy(prediction)])  # as mmengine's Evaluator: a copy
    ours, mmdets = (metric.evaluate(size=len(dataset)) for metric in metrics)
    assert ours['coco/bbox_mAP'] == 1.0 and ours['coco/segm_mAP'] == 1.0, ours
    assert mmdets['coco/segm_mAP'] < 1.0, mmdets  # the padded images' masks: not found


def test_a_box_predicted_in_the_padding_gets_its_mask(thin_coco):
    """Why ori_shape is the padded size: on the CPU, mmdet's mask head fails on a box 2 pixels
    or more beyond the image of ori_shape (torch.arange from the box's top to the image's
    bottom), and the model may well predict one in the padding."""
    _, sample = samples(build_dataset(thin_coco, 'val', (128, 128)))['wide.png']
    meta = sample['data_samples'].metainfo
    box, label = torch.tensor([[10., 2., 50., 4.]]), torch.tensor([0])  # in the padding
    (mask, ) = perfect_predictions(box, label, meta)['pred_instances']['masks'].numpy()
    in_file = box[0] / torch.tensor(meta['scale_factor']).repeat(2)
    assert in_file[1] > 6 and not mask[:4].any()  # below the image's 4 rows
    assert np.abs(np.array(bounding_box(mask)) - in_file.numpy()).max() <= 1
    with pytest.raises(RuntimeError, match='upper bound and lower bound inconsistent'):
        perfect_predictions(box, label, dict(meta, ori_shape=(4, 2000)))


@pytest.mark.parametrize('name', list(IMAGES))
def test_padding_is_black_below_or_right_with_a_warning_naming_the_file(
        thin_coco, name, logged_warnings):
    path = str(thin_coco / 'images' / name)
    height, width, _ = IMAGES[name]
    padded_shape = PADDED[name]
    original = np.asarray(Image.open(path))[..., ::-1]
    results = SafeLoadImageFromFile()(dict(img_path=path))
    img = results['img']
    assert img.shape[:2] == results['img_shape'] == results['ori_shape'] == padded_shape
    assert np.array_equal(img[:height, :width], original)
    assert not img[height:].any() and not img[:, width:].any()
    side = 'bottom' if name == 'wide.png' else 'right'
    assert len(logged_warnings) == 1 and path in logged_warnings[0], logged_warnings
    assert f'is {width} x {height} pixels' in logged_warnings[0]
    assert f'at the {side} to {padded_shape[1]} x {padded_shape[0]}' in logged_warnings[0]


@pytest.mark.parametrize('size', [(1, 1), (1, 32), (40, 1280), (2000, 63)])
def test_images_up_to_the_ratio_are_kept_as_they_are(size, tmp_path, logged_warnings):
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'kept.png')
    results = SafeLoadImageFromFile()(dict(img_path=str(tmp_path / 'kept.png')))
    assert np.array_equal(results['img'], rgb[..., ::-1]) and not logged_warnings


def test_max_aspect_ratio_is_checked():
    with pytest.raises(ValueError, match='max_aspect_ratio must be 1 or more'):
        SafeLoadImageFromFile(max_aspect_ratio=0.5)


def test_classification_evaluation_keeps_a_thin_image_small(tmp_path):
    """ImageNet's test pipeline resizes the short side to 256: unpadded, a 3000 x 1 image would
    become 768,000 pixels long (590 MB; a 40000 x 1 one runs out of memory)."""
    from mmpretrain.registry import TRANSFORMS
    cfg = Config.fromfile(REPO / 'configs' / 'cmt' / 'cmt-s_8xb128_in1k.py')
    init_default_scope('mmpretrain')
    Image.fromarray(np.full((1, 3000, 3), 200, np.uint8)).save(tmp_path / 'line.png')
    results = dict(img_path=str(tmp_path / 'line.png'), gt_label=0)
    for transform in cfg.test_dataloader.dataset.pipeline:
        results = TRANSFORMS.build(transform)(results)
        if transform.type == 'ResizeEdge':
            height, width = results['img'].shape[:2]
            assert height == 256 and width <= 32 * 256
    assert results['inputs'].shape == (3, 224, 224)


def test_show_dir_draws_the_padded_image_with_its_masks(thin_coco, tmp_path):
    """tools/test.py --show-dir: mmdet's visualization hook reads the file again (4 x 2000) and
    mmdet's visualizer cannot draw masks of the padded size on it; cmt_mm's pads it the same."""
    from mmdet.structures import DetDataSample
    from mmdet.visualization import DetLocalVisualizer as MMDetLocalVisualizer
    from mmengine.structures import InstanceData

    from cmt_mm.visualization import DetLocalVisualizer
    info, sample = samples(build_dataset(thin_coco, 'val', SHIPPED_SCALE))['wide.png']
    meta = sample['data_samples'].metainfo
    boxes, labels = objects_in_input(info, meta)
    data_sample = DetDataSample(metainfo=meta)
    data_sample.pred_instances = InstanceData(
        **perfect_predictions(boxes, labels, meta)['pred_instances'])
    image = np.asarray(Image.open(info['img_path']).convert('RGB'))
    assert image.shape[:2] == (4, 2000)

    with pytest.raises(AssertionError):  # mmdet's: masks and image of different sizes
        mmdet_visualizer = MMDetLocalVisualizer(name='mmdet_thin')
        mmdet_visualizer.dataset_meta = dict(classes=CLASSES)
        mmdet_visualizer.add_datasample('wide', image, data_sample, draw_gt=False)
    visualizer = DetLocalVisualizer(name='cmt_mm_thin')
    visualizer.dataset_meta = dict(classes=CLASSES)
    out_file = tmp_path / 'wide.png'
    visualizer.add_datasample('wide', image, data_sample, draw_gt=False, out_file=str(out_file))
    drawn = np.asarray(Image.open(out_file))
    assert drawn.shape[:2] == PADDED['wide.png']
    assert not drawn[4:].any() or drawn[4:].mean() < drawn[:4].mean()  # the padding stays dark
