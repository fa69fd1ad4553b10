"""A tiny two-class image folder for the end-to-end classification tests."""
from pathlib import Path

import numpy as np


def write_two_class_images(root: Path) -> Path:
    """16 32x32 PNGs in ``root/data/{cat,dog}/``; returns ``root/data``.

    Class 0 dark, class 1 bright: learnable in one epoch, but any value works. The names are
    unique (--show-dir names its drawings after the images).
    """
    from PIL import Image

    data = Path(root) / 'data'
    rng = np.random.default_rng(0)
    for label, name in enumerate(['cat', 'dog']):
        (data / name).mkdir(parents=True)
        for i in range(8):
            pixels = (rng.integers(0, 128, (32, 32, 3)) + 127 * label).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f'{name}{i}.png')
    return data
