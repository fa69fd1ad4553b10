"""The batch transforms do per image what mmpretrain's and mmcv's CPU transforms do: each
RandAugment operation matches mmcv's function on a real CIFAR-10 image to one grey level, the
crop, flip and resize match mmpretrain's pipeline transforms, and the random draws are per image,
with RandAugment's choice and magnitude distributions."""
import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmpretrain.datasets import RandomCrop, RandomFlip  # noqa: F401 (registers them)
from mmpretrain.registry import TRANSFORMS
from tiny_data import extract_cifar10_jpegs

from cmt_mm.models.data_preprocessors import batch_transforms as bt
from cmt_mm.registry import BATCH_TRANSFORMS

FILL = (114., 123., 125.)


@pytest.fixture(scope='module')
def rgb():
    """A real 32x32 CIFAR-10 training image, RGB uint8 (H, W, 3)."""
    return extract_cifar10_jpegs(['frog'])['train'][0][0]


def as_batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()


def as_image(batch: torch.Tensor) -> np.ndarray:
    return batch[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def assert_within_one_level(ours: torch.Tensor, reference: np.ndarray, exact: bool = False):
    difference = np.abs(as_image(ours).astype(int) - reference.astype(int))
    # mmcv truncates its float results to uint8 where these round: one grey level at most
    assert difference.max() <= (0 if exact else 1), difference.max()


def bgr_op(function):
    """mmcv's colour functions read BGR images: run one on RGB, return RGB."""
    return lambda image, *args, **kwargs: function(image[..., ::-1], *args, **kwargs)[..., ::-1]


@pytest.mark.parametrize('name, ours, reference', [
    ('AutoContrast', lambda x: bt.auto_contrast(x, None), mmcv.auto_contrast),
    ('Equalize', lambda x: bt.equalize(x, None), mmcv.imequalize),
    ('Invert', lambda x: bt.invert(x, None), mmcv.iminvert),
    ('Posterize', lambda x: bt.posterize(x, torch.tensor([2.4])), lambda i: mmcv.posterize(i, 3)),
    ('Solarize', lambda x: bt.solarize(x, torch.tensor([100.])), lambda i: mmcv.solarize(i, 100)),
    ('SolarizeAdd', lambda x: bt.solarize_add(x, torch.tensor([60.])),
     lambda i: np.where(i < 128, np.minimum(i.astype(int) + 60, 255), i)),
    ('ColorTransform', lambda x: bt.color(x, torch.tensor([0.6])),
     lambda i: bgr_op(mmcv.adjust_color)(i, alpha=1.6)),
    ('Contrast', lambda x: bt.contrast(x, torch.tensor([-0.5])),
     lambda i: bgr_op(mmcv.adjust_contrast)(i, 0.5)),
    ('Brightness', lambda x: bt.brightness(x, torch.tensor([0.4])),
     lambda i: mmcv.adjust_brightness(i, 1.4)),
    ('Sharpness', lambda x: bt.sharpness(x, torch.tensor([0.7])),
     lambda i: mmcv.adjust_sharpness(i, 1.7)),
])
def test_colour_operations_match_mmcv(rgb, name, ours, reference):
    exact = name in ('Equalize', 'Invert', 'Posterize', 'Solarize', 'SolarizeAdd')
    assert_within_one_level(ours(as_batch(rgb)), reference(rgb.copy()), exact=exact)


@pytest.mark.parametrize('name, ours, reference', [
    ('Rotate', lambda x, f, mode: bt.rotate(x, torch.tensor([20.]), f, mode),
     lambda i, mode: mmcv.imrotate(i, 20, border_value=FILL, interpolation=mode)),
    ('ShearX', lambda x, f, mode: bt.shear_x(x, torch.tensor([0.2]), f, mode),
     lambda i, mode: mmcv.imshear(i, 0.2, 'horizontal', FILL, mode)),
    ('ShearY', lambda x, f, mode: bt.shear_y(x, torch.tensor([-0.25]), f, mode),
     lambda i, mode: mmcv.imshear(i, -0.25, 'vertical', FILL, mode)),
    ('TranslateX', lambda x, f, mode: bt.translate_x(x, torch.tensor([0.3]), f, mode),
     lambda i, mode: mmcv.imtranslate(i, 0.3 * 32, 'horizontal', FILL, mode)),
    ('TranslateY', lambda x, f, mode: bt.translate_y(x, torch.tensor([-0.25]), f, mode),
     lambda i, mode: mmcv.imtranslate(i, -0.25 * 32, 'vertical', FILL, mode)),
])
def test_geometric_operations_match_mmcv(rgb, name, ours, reference):
    fill = torch.tensor(FILL).view(1, 3, 1, 1)
    assert_within_one_level(ours(as_batch(rgb), fill, 'bilinear'), reference(rgb, 'bilinear'))
    # bicubic: OpenCV's and torch's kernels weigh the border pixels differently
    difference = np.abs(as_image(ours(as_batch(rgb), fill, 'bicubic')).astype(int) -
                        reference(rgb, 'bicubic').astype(int))
    assert np.median(difference) <= 1 and difference.mean() < 3, difference.mean()


def test_crop_and_flip_give_what_mmpretrain_gives_at_the_same_offsets(rgb):
    batch = as_batch(rgb).repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    crops = bt.BatchRandomCrop(32, padding=4)(batch)
    flips = bt.BatchRandomFlip(prob=0.5)(batch)
    padded = np.pad(rgb, ((4, 4), (4, 4), (0, 0)), mode='reflect')
    # every crop is one of mmpretrain's reflect-padded crops, at offsets in [0, 8]
    windows = {(top, left): padded[top:top + 32, left:left + 32]
               for top in range(9) for left in range(9)}
    offsets = set()
    for crop in crops:
        found = [at for at, window in windows.items() if np.array_equal(as_image(crop[None]),
                                                                          window)]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 20  # drawn per image
    flipped = [np.array_equal(as_image(f[None]), rgb[:, ::-1]) for f in flips]
    assert all(flipped[i] or np.array_equal(as_image(f[None]), rgb) for i, f in enumerate(flips))
    assert 16 < sum(flipped) < 48
    pipeline = Compose([TRANSFORMS.build(dict(type='RandomCrop', crop_size=32, padding=4,
                                              padding_mode='reflect'))])
    assert pipeline(dict(img=rgb.copy()))['img'].shape == (32, 32, 3)


def test_resize_matches_mmcv_bicubic_upsampling(rgb):
    ours = bt.BatchResize(64)(as_batch(rgb))
    difference = np.abs(as_image(ours).astype(int) -
                        mmcv.imresize(rgb, (64, 64), interpolation='bicubic').astype(int))
    assert difference.max() <= 1
    assert bt.BatchResize(32)(as_batch(rgb)).shape == (1, 3, 32, 32)


def test_rand_augment_draws_operations_and_magnitudes_per_image(rgb, monkeypatch):
    calls = []

    def recording(name, op):
        def function(images, magnitude, *extra):
            calls.append((name, len(images), magnitude))
            return op.function(images, magnitude, *extra)
        return bt._Op(function, op.magnitude_range, op.signed, op.geometric)

    ops = {name: recording(name, op) for name, op in bt.TIMM_INCREASING.items()}
    monkeypatch.setattr(bt, 'TIMM_INCREASING', ops)
    augment = bt.BatchRandAugment(num_policies=2, magnitude_level=9, magnitude_std=0.5,
                                  pad_val=FILL)
    torch.manual_seed(0)
    out = augment(as_batch(rgb).repeat(3000, 1, 1, 1))
    assert out.shape == (3000, 3, 32, 32) and out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, out.round())
    applied = sum(n for _, n, _ in calls)
    assert abs(applied - 3000) < 150  # 2 operations per image, each with probability 0.5
    assert {name for name, _, _ in calls} == set(bt.TIMM_INCREASING)
    rotations = torch.cat([m for name, _, m in calls if name == 'Rotate'])
    assert 0.35 < (rotations < 0).float().mean() < 0.65  # the sign is random
    assert abs(rotations.abs().mean() - 27) < 1 and rotations.abs().max() <= 30  # N(9, 0.5)/10
    bits = torch.cat([m for name, _, m in calls if name == 'Posterize'])
    assert (bits >= 0).all() and abs(bits.mean() - 0.4) < 0.1  # (4, 0) at level 9


def test_rand_augment_refuses_unknown_operations_and_levels():
    with pytest.raises(ValueError, match=r"unknown operations \['Blur'\]"):
        bt.BatchRandAugment(ops=['Rotate', 'Blur'])
    with pytest.raises(ValueError, match='magnitude_level 12 is outside'):
        bt.BatchRandAugment(magnitude_level=12)
    with pytest.raises(ValueError, match='does not fit images of 32x32'):
        bt.BatchRandomCrop(40)(torch.zeros(1, 3, 32, 32))


def test_transforms_build_from_the_registry():
    transform = BATCH_TRANSFORMS.build(dict(type='BatchRandAugment', magnitude_level=5))
    assert isinstance(transform, bt.BatchRandAugment) and transform.magnitude_level == 5
