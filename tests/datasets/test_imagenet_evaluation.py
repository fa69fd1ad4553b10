"""Evaluating a converted released checkpoint with tools/test.py on an ImageNet folder layout.

The fixture is the layout of the released code: val/<wnid>/*.JPEG with one folder per class, all
1000 of them (mmpretrain's ImageNet dataset insists on the 1000 classes), of which three hold a
few images. The class index is the folder's rank, as for the real wnids.

The released-format CMT-Ti weights are random except the classifier, which is set to a
nearest-class-mean rule over the pooled features of the released model (an independent
re-implementation) on images preprocessed here without mmpretrain: resize to 256/224 of 160,
center crop, ImageNet normalisation of RGB. Each class has its own colour, and one image sits
in another class's folder, so the top-1 accuracy the reference model gets is 5/6; tools/test.py
must report the same number, which it only does if the conversion, the checkpoint loading, the
test pipeline (its channel order, resize and crop) and the labels all agree with the released
model.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reference.cmt_released import build_released_cmt

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'cmt' / 'cmt-ti_8xb128_in1k.py'
CROP, RESIZE = 160, 182  # CMT-Ti's test crop, and int(160 * 256 / 224)
RGB_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
RGB_STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
COLOURS = {0: (200, 40, 40), 500: (40, 200, 40), 999: (40, 40, 200)}  # class index -> RGB
# (folder class, colour class) of each image: the last one is misfiled
IMAGES = [(0, 0), (0, 0), (500, 500), (500, 500), (999, 999), (999, 0)]
TIMEOUT = 300


def write_imagenet_val(root: Path) -> list:
    """val/n00000000 ... val/n00000999 with the IMAGES; returns their RGB pixels."""
    for index in range(1000):
        (root / 'val' / f'n{index:08d}').mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = []
    for number, (folder, colour) in enumerate(IMAGES, 1):
        noise = rng.normal(0, 40, (200, 200, 3))
        image = np.clip(np.array(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)
        # Lossless enough that the decoders of PIL and OpenCV agree to within a grey level
        Image.fromarray(image).save(
            root / 'val' / f'n{folder:08d}' / f'ILSVRC2012_val_{number:08d}.JPEG',
            quality=100, subsampling=0)
        pixels.append(image)
    return pixels


def reference_inputs(pixels: list) -> torch.Tensor:
    """The released test transform, written out: bicubic resize, center crop, normalise."""
    offset = (RESIZE - CROP) // 2
    inputs = []
    for image in pixels:
        resized = Image.fromarray(image).resize((RESIZE, RESIZE), Image.BICUBIC)
        cropped = np.array(resized.crop((offset, offset, offset + CROP, offset + CROP)))
        inputs.append((torch.from_numpy(cropped).permute(2, 0, 1).float() - RGB_MEAN) / RGB_STD)
    return torch.stack(inputs)


def pooled_features(model, x: torch.Tensor) -> torch.Tensor:
    x = model._swish(model._bn(model._fc(model.forward_features(x))))
    return torch.flatten(model._avg_pooling(x), 1)


def nearest_class_mean_classifier(pixels: list) -> tuple:
    """A released CMT-Ti whose head scores the three classes by their colours' mean features;
    returns the model and its top-1 accuracy (%) on the images, with their folder labels."""
    torch.manual_seed(0)
    model = build_released_cmt('ti').eval()
    inputs = reference_inputs(pixels)
    labels = torch.tensor([folder for folder, _ in IMAGES])
    colours = torch.tensor([colour for _, colour in IMAGES])
    with torch.no_grad():
        features = pooled_features(model, inputs)
        model.head.weight.zero_()
        model.head.bias.fill_(-1e4)  # the classes without images never win
        for index in COLOURS:
            model.head.weight[index] = features[colours == index].mean(0) - features.mean(0)
            model.head.bias[index] = 0
        predictions = model(inputs).argmax(dim=1)
    return model, (predictions == labels).float().mean().item() * 100


def test_tools_test_evaluates_a_converted_released_checkpoint(tmp_path):
    pixels = write_imagenet_val(tmp_path / 'imagenet')
    model, expected_top1 = nearest_class_mean_classifier(pixels)
    assert abs(expected_top1 - 100 * 5 / 6) < 1e-3, 'the fixture no longer separates the classes'

    released, converted = tmp_path / 'cmt_tiny.pth', tmp_path / 'cmt-ti_in1k.pth'
    torch.save({'model': model.state_dict()}, released)
    subprocess.run([sys.executable, str(REPO / 'tools/model_converters/cmt_to_mm.py'),
                    str(released), str(converted)], check=True, capture_output=True)

    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/test.py'), str(CONFIG), str(converted),
         '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', 'test_dataloader.num_workers=0', 'test_dataloader.batch_size=6'],
        env={**os.environ, 'IMAGENET_ROOT': f'{tmp_path / "imagenet"}/'},
        capture_output=True, text=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    metrics = re.search(r'Epoch\(test\) \[1/1\]\s+accuracy/top1: ([\d.]+)\s+'
                        r'accuracy/top5: ([\d.]+)', output)
    assert metrics, output[-3000:]
    top1, top5 = map(float, metrics.groups())
    assert abs(top1 - expected_top1) < 1e-2
    assert top1 <= top5 <= 100
