"""Small image data for the tests: a tiny two-class image folder, and real CIFAR-10 images from
the shared archive beside the checkout."""
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_JPEGS = (Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'cifar10' /
                 'cifar10-jpg.tar.gz')


def write_two_class_images(root: Path) -> Path:
    """16 32x32 PNGs in ``root/data/{cat,dog}/``; returns ``root/data``.

    Class 0 dark, class 1 bright: learnable in one epoch, but any value works. The names are
    unique (--show-dir names its drawings after the images).
    """
    data = Path(root) / 'data'
    rng = np.random.default_rng(0)
    for label, name in enumerate(['cat', 'dog']):
        (data / name).mkdir(parents=True)
        for i in range(8):
            pixels = (rng.integers(0, 128, (32, 32, 3)) + 127 * label).astype(np.uint8)
            Image.fromarray(pixels).save(data / name / f'{name}{i}.png')
    return data


def extract_cifar10_jpegs(classes: list) -> dict:
    """The first image of each class in each split of the shared archive (train/<class>/*.jpg,
    test/<class>/*.jpg; only those members are extracted): {split: [(RGB array, class)]}."""
    assert CIFAR10_JPEGS.is_file(), (
        f'CIFAR-10 JPEGs expected at {CIFAR10_JPEGS} (../shared/data/cifar10/ beside the '
        'checkout)')
    missing = {(split, name) for split in ('train', 'test') for name in classes}
    images = {'train': [], 'test': []}
    with tarfile.open(CIFAR10_JPEGS) as archive:
        for member in archive:
            split, name = (member.name.split('/') + ['', ''])[:2]
            if member.isfile() and (split, name) in missing:
                missing.remove((split, name))
                with Image.open(archive.extractfile(member)) as image:
                    images[split].append((np.asarray(image.convert('RGB')), name))
                if not missing:
                    break
    assert not missing, f'{CIFAR10_JPEGS} lacks images of {sorted(missing)}'
    return images
