"""A small synthetic COCO instance-segmentation dataset: coloured shapes on noisy backgrounds.

It lets the detection pipeline (data loading, training, COCO evaluation, visualisation) run
end to end without downloading anything. Every image holds a few non-overlapping shapes of
several classes, sizes, rotations and colours on a smooth random background with pixel
noise, so the task needs real features but is learnable in minutes. The annotations are
exact: each object is drawn from the polygon stored as its ``segmentation``.

    from cmt_mm.utils.synthetic_coco import make_shapes_coco
    paths = make_shapes_coco('work_dirs/demo/shapes')
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['CLASSES', 'make_shapes_coco', 'dataset_paths', 'is_valid_dataset']

CLASSES = ('circle', 'square', 'triangle', 'star')

SPLITS = ('train', 'val')
# Objects span this fraction of the image side (their bounding circle's diameter).
SIZE_RANGE = (0.12, 0.38)
OBJECTS_PER_IMAGE = (2, 5)
# Objects must differ from the background by at least this much (mean RGB distance).
MIN_CONTRAST = 60.
JPEG_QUALITY = 95


def dataset_paths(root: str) -> Dict[str, str]:
    """Where :func:`make_shapes_coco` puts each split's images and annotation file."""
    paths = {}
    for split in SPLITS:
        paths[f'{split}_images'] = osp.join(root, split)
        paths[f'{split}_ann'] = osp.join(root, 'annotations', f'instances_{split}.json')
    return paths


def _settings(num_train: int, num_val: int, image_size: int, seed: int) -> dict:
    """Generation settings, stored in each annotation file so a rerun can recognise them."""
    return dict(description='cmt_mm synthetic shapes', num_train=num_train,
                num_val=num_val, image_size=image_size, seed=seed, classes=list(CLASSES))


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field: a coarse random grid, upsampled bilinearly."""
    cells = int(rng.integers(2, 6))
    grid = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    field = Image.fromarray(grid).resize((size, size), Image.BILINEAR)
    return np.asarray(field, dtype=np.float32)


def _outline(label: str, radius: float, angle: float, rng: np.random.Generator) -> np.ndarray:
    """The polygon of one shape centred at the origin, as an (N, 2) array."""
    if label == 'circle':
        # Slightly elliptical, so circles are not just "round blobs of one size".
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        squash = rng.uniform(0.8, 1.0)
        pts = np.stack([radius * np.cos(t), radius * squash * np.sin(t)], axis=1)
    elif label == 'square':
        t = np.arange(4) * math.pi / 2 + math.pi / 4
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    elif label == 'triangle':
        t = np.arange(3) * 2 * math.pi / 3 - math.pi / 2
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    else:  # a five-pointed star
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from the mean background colour under the object."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - under).mean() >= MIN_CONTRAST:
            break
        colour = rng.uniform(0, 255, 3)
    else:
        colour = np.where(under > 127, 0., 255.)  # a guaranteed contrast
    return colour


def _place(rng: np.random.Generator, size: int,
           taken: List[Tuple[float, float, float]]) -> Optional[Tuple[float, float, float]]:
    """A centre and radius for a new object inside the image, clear of the others."""
    for _ in range(30):
        radius = rng.uniform(*SIZE_RANGE) * size / 2
        cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
        if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in taken):
            return cx, cy, radius
    return None


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _draw_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    """One image (uint8 RGB) and its objects as (category_id, polygon) records."""
    canvas = _background(rng, size)
    objects, taken = [], []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        spot = _place(rng, size, taken)
        if spot is None:
            continue
        cx, cy, radius = spot
        taken.append(spot)
        label = int(rng.integers(len(CLASSES)))
        pts = _outline(CLASSES[label], radius, rng.uniform(0, 2 * math.pi), rng)
        pts += (cx, cy)

        mask = Image.new('L', (size, size))
        ImageDraw.Draw(mask).polygon([tuple(p) for p in pts], fill=255)
        mask = np.asarray(mask) > 0
        colour = _contrasting_colour(rng, canvas[mask].mean(axis=0))
        canvas[mask] = colour
        objects.append(dict(category_id=label + 1, polygon=pts))

    noise = rng.normal(0, rng.uniform(4, 20), canvas.shape)
    image = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return image, objects


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    pts = obj['polygon']
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return dict(id=ann_id, image_id=image_id, category_id=obj['category_id'],
                segmentation=[[round(float(v), 2) for v in pts.reshape(-1)]],
                area=round(_polygon_area(pts), 2),
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)], iscrowd=0)


def _write_split(rng: np.random.Generator, num_images: int, size: int, image_dir: str,
                 ann_file: str, settings: dict) -> None:
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image, objects = _draw_image(rng, size)
        file_name = f'{image_id:06d}.jpg'
        Image.fromarray(image).save(osp.join(image_dir, file_name), quality=JPEG_QUALITY)
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for obj in objects:
            annotations.append(_annotation(obj, len(annotations) + 1, image_id))

    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    coco = dict(info=settings, images=images, annotations=annotations, categories=categories)
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def make_shapes_coco(root: str, num_train: int = 800, num_val: int = 100,
                     image_size: int = 128, seed: int = 0) -> Dict[str, str]:
    """Write the dataset under ``root`` and return its paths (see :func:`dataset_paths`).

    Layout: ``root/{train,val}/NNNNNN.jpg`` and
    ``root/annotations/instances_{train,val}.json``. The same arguments always give the
    same files; the validation images are drawn from their own random stream, so they are
    held out from the training images.
    """
    if image_size < 32:
        raise ValueError(f'image_size must be at least 32, got {image_size}')
    settings = _settings(num_train, num_val, image_size, seed)
    paths = dataset_paths(root)
    # One independent stream per split: the val set does not depend on num_train.
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    for split, stream, count in zip(SPLITS, streams, (num_train, num_val)):
        _write_split(np.random.default_rng(stream), count, image_size,
                     paths[f'{split}_images'], paths[f'{split}_ann'], settings)
    return paths


def is_valid_dataset(root: str, num_train: int = 800, num_val: int = 100,
                     image_size: int = 128, seed: int = 0) -> bool:
    """Whether ``root`` holds a complete dataset made with exactly these arguments."""
    settings = _settings(num_train, num_val, image_size, seed)
    paths = dataset_paths(root)
    for split in SPLITS:
        try:
            with open(paths[f'{split}_ann']) as f:
                coco = json.load(f)
        except (OSError, ValueError):
            return False
        if coco.get('info') != settings:
            return False
        image_dir = paths[f'{split}_images']
        if not all(osp.isfile(osp.join(image_dir, img['file_name'])) for img in coco['images']):
            return False
    return True
