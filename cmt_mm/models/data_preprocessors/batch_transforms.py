"""Image augmentations applied to a whole batch on the model's device.

For tiny images such as CIFAR's, the per-sample Python work of a CPU pipeline (cropping,
flipping, RandAugment, resizing, packing) can leave a GPU waiting for the data loader (CMT-S on
CIFAR-10: epochs of 10-13 s against 7.5 s with these). These transforms do the same work on the
batch tensor, with a random draw per image, in a few dozen kernels. They take and return float
tensors ``(N, C, H, W)`` of RGB values in [0, 255] (``BatchAugmentClsDataPreprocessor`` runs
them before normalising) and draw from torch's generator of the batch's device, which
``cmt_mm.IterationSeedHook`` seeds.
"""
from typing import Callable, Dict, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from cmt_mm.registry import BATCH_TRANSFORMS

# ITU-R 601 luma weights of R, G, B, as Pillow's and mmcv's grayscale conversion
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@BATCH_TRANSFORMS.register_module()
class BatchRandomCrop:
    """Pad every image by ``padding`` pixels and crop ``size`` at a random place per image,
    as mmpretrain's ``RandomCrop(crop_size, padding, padding_mode)``.

    Args:
        size (int | tuple[int, int]): The crop's height and width.
        padding (int): Pixels added on every side before cropping. Defaults to 0.
        padding_mode (str): ``'reflect'``, ``'replicate'`` or ``'constant'`` (zeros), as
            ``torch.nn.functional.pad``. Defaults to ``'reflect'``.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], padding: int = 0,
                 padding_mode: str = 'reflect') -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding
        self.padding_mode = padding_mode

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.padding:
            images = F.pad(images, [self.padding] * 4, mode=self.padding_mode)
        n, _, height, width = images.shape
        crop_h, crop_w = self.size
        if crop_h > height or crop_w > width:
            raise ValueError(f'BatchRandomCrop: a {crop_h}x{crop_w} crop does not fit images '
                             f'of {height}x{width} (padding included); lower size or raise '
                             'padding')
        top = torch.randint(0, height - crop_h + 1, (n, 1, 1), device=images.device)
        left = torch.randint(0, width - crop_w + 1, (n, 1, 1), device=images.device)
        rows = top + torch.arange(crop_h, device=images.device).view(1, -1, 1)
        cols = left + torch.arange(crop_w, device=images.device).view(1, 1, -1)
        # one gather per pixel: (N, crop_h, crop_w, C) -> (N, C, crop_h, crop_w)
        batch = torch.arange(n, device=images.device).view(-1, 1, 1)
        return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


@BATCH_TRANSFORMS.register_module()
class BatchRandomFlip:
    """Flip each image horizontally with probability ``prob``, as mmpretrain's
    ``RandomFlip(prob, direction='horizontal')``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(images.size(0), device=images.device) < self.prob
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


@BATCH_TRANSFORMS.register_module()
class BatchResize:
    """Resize the batch to ``size`` (height, width), as mmpretrain's ``Resize(scale)``.

    Args:
        size (int | tuple[int, int]): The output's height and width.
        interpolation (str): ``'bicubic'``, ``'bilinear'`` or ``'nearest'``.
            Defaults to ``'bicubic'``.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], interpolation: str = 'bicubic') -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation = interpolation

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-2:]) == self.size:
            return images
        align = None if self.interpolation == 'nearest' else False
        resized = F.interpolate(images, size=self.size, mode=self.interpolation,
                                align_corners=align)
        return resized.clamp_(0, 255)  # bicubic overshoots; OpenCV's uint8 output saturates


# --- RandAugment's operations. Each takes images (n, 3, H, W) in [0, 255] and a magnitude per
# image (n,), already scaled to the operation's range and signed, and returns float images that
# RandAugment rounds and clips to [0, 255] like the uint8 arrays of the CPU transforms.


def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _blend(images: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``degenerate + factor * (images - degenerate)``, Pillow's ImageEnhance."""
    return degenerate + factor.view(-1, 1, 1, 1) * (images - degenerate)


def auto_contrast(images, magnitude):
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    scale = 255 / (high - low).clamp(min=1)
    return torch.where(high > low, (images - low) * scale, images)


def equalize(images, magnitude):
    """Histogram equalisation of each channel, Pillow's ``ImageOps.equalize``."""
    n, channels, height, width = images.shape
    values = images.round().long().clamp(0, 255).flatten(2)  # (n, C, HW)
    hist = torch.zeros(n, channels, 256, device=images.device)
    hist.scatter_add_(2, values, torch.ones_like(values, dtype=hist.dtype))
    # Pillow's step leaves out the count of the highest value present
    last = (hist > 0).float().cumsum(2).argmax(2, keepdim=True)
    step = torch.div(height * width - hist.gather(2, last), 255, rounding_mode='floor')
    below = hist.cumsum(2) - hist
    lut = torch.div(below + torch.div(step, 2, rounding_mode='floor'), step.clamp(min=1),
                    rounding_mode='floor').clamp(max=255)
    equalized = lut.gather(2, values).view_as(images)
    return torch.where((step > 0).view(n, channels, 1, 1), equalized, images)


def invert(images, magnitude):
    return 255 - images


def posterize(images, bits):
    """Keep the top ``ceil(bits)`` bits of each value (mmpretrain rounds the bits up, as timm)."""
    shift = 2 ** (8 - bits.ceil().clamp(0, 8)).view(-1, 1, 1, 1)
    return torch.div(images.round(), shift, rounding_mode='floor') * shift


def solarize(images, threshold):
    return torch.where(images < threshold.view(-1, 1, 1, 1), images, 255 - images)


def solarize_add(images, addition, threshold: float = 128):
    added = (images + addition.view(-1, 1, 1, 1)).clamp(max=255)
    return torch.where(images < threshold, added, images)


def color(images, magnitude):
    return _blend(images, _gray(images), 1 + magnitude)


def contrast(images, magnitude):
    # mmcv's adjust_contrast blends with the rounded mean of the grayscale image
    mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True).round()
    return _blend(images, mean, 1 + magnitude)


def brightness(images, magnitude):
    return _blend(images, torch.zeros_like(images), 1 + magnitude)


def sharpness(images, magnitude):
    """Blend with Pillow's smoothing filter, borders reflected (``mmcv.adjust_sharpness``)."""
    kernel = images.new_tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13
    padded = F.pad(images, [1] * 4, mode='reflect')
    smooth = F.conv2d(padded, kernel.expand(images.size(1), 1, 3, 3), groups=images.size(1))
    return _blend(images, smooth.round(), 1 + magnitude)


def _warp(images: torch.Tensor, inverse: torch.Tensor, fill: torch.Tensor,
          interpolation: str) -> torch.Tensor:
    """Warp each image as OpenCV's ``warpAffine`` with the forward matrix ``M`` does, given
    ``inverse`` (n, 2, 3) = ``M^-1``: output pixel ``p`` comes from source pixel ``M^-1 p``,
    pixel centres at integer coordinates. What falls outside the image becomes ``fill``."""
    height, width = images.shape[-2:]
    # grid_sample's normalised coordinates (align_corners=False): u = (2 x + 1) / W - 1
    scale = images.new_tensor([width, height]) / 2
    offset = (images.new_tensor([width, height]) - 1) / 2
    linear = inverse[:, :, :2] * scale.view(1, 1, 2) / scale.view(1, 2, 1)
    shift = (inverse[:, :, :2] @ offset + inverse[:, :, 2] - offset) / scale
    theta = torch.cat([linear, shift.unsqueeze(2)], 2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # sampling (images - fill) with zero padding fills the outside with ``fill``
    warped = F.grid_sample(images - fill, grid, mode=interpolation, padding_mode='zeros',
                           align_corners=False)
    return warped + fill


def _identities(n: int, device) -> torch.Tensor:
    matrix = torch.zeros(n, 2, 3, device=device)
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1
    return matrix


def rotate(images, degrees, fill, interpolation):
    """Rotate about the image centre, clockwise for positive angles (``mmcv.imrotate``)."""
    height, width = images.shape[-2:]
    # the inverse of a clockwise rotation is the counter-clockwise one
    angle = torch.deg2rad(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    inverse = torch.stack([
        torch.stack([cos, sin, (1 - cos) * cx - sin * cy], 1),
        torch.stack([-sin, cos, sin * cx + (1 - cos) * cy], 1)
    ], 1)
    return _warp(images, inverse, fill, interpolation)


def shear_x(images, magnitude, fill, interpolation):
    """``mmcv.imshear(direction='horizontal')``: x' = x + magnitude * y."""
    inverse = _identities(images.size(0), images.device)
    inverse[:, 0, 1] = -magnitude
    return _warp(images, inverse, fill, interpolation)


def shear_y(images, magnitude, fill, interpolation):
    inverse = _identities(images.size(0), images.device)
    inverse[:, 1, 0] = -magnitude
    return _warp(images, inverse, fill, interpolation)


def translate_x(images, fraction, fill, interpolation):
    """Shift by ``fraction`` of the width (mmpretrain's ``Translate``)."""
    inverse = _identities(images.size(0), images.device)
    inverse[:, 0, 2] = -fraction * images.size(-1)
    return _warp(images, inverse, fill, interpolation)


def translate_y(images, fraction, fill, interpolation):
    inverse = _identities(images.size(0), images.device)
    inverse[:, 1, 2] = -fraction * images.size(-2)
    return _warp(images, inverse, fill, interpolation)


class _Op:
    """One of RandAugment's operations: its function, the magnitude at levels 0 and
    ``total_level`` (None: it has none) and whether the sign of the magnitude is random."""

    def __init__(self, function: Callable, magnitude_range=None, signed: bool = False,
                 geometric: bool = False) -> None:
        self.function = function
        self.magnitude_range = magnitude_range
        self.signed = signed
        self.geometric = geometric


# timm's ``_RAND_INCREASING_TRANSFORMS``, as mmpretrain's ``RandAugment(policies=
# 'timm_increasing')`` builds them: each operation chosen is applied with probability 0.5 and
# every signed magnitude is negated with probability 0.5.
TIMM_INCREASING: Dict[str, _Op] = {
    'AutoContrast': _Op(auto_contrast),
    'Equalize': _Op(equalize),
    'Invert': _Op(invert),
    'Rotate': _Op(rotate, (0, 30), signed=True, geometric=True),
    'Posterize': _Op(posterize, (4, 0)),
    'Solarize': _Op(solarize, (256, 0)),
    'SolarizeAdd': _Op(solarize_add, (0, 110)),
    'ColorTransform': _Op(color, (0, 0.9), signed=True),
    'Contrast': _Op(contrast, (0, 0.9), signed=True),
    'Brightness': _Op(brightness, (0, 0.9), signed=True),
    'Sharpness': _Op(sharpness, (0, 0.9), signed=True),
    'ShearX': _Op(shear_x, (0, 0.3), signed=True, geometric=True),
    'ShearY': _Op(shear_y, (0, 0.3), signed=True, geometric=True),
    'TranslateX': _Op(translate_x, (0, 0.45), signed=True, geometric=True),
    'TranslateY': _Op(translate_y, (0, 0.45), signed=True, geometric=True),
}


@BATCH_TRANSFORMS.register_module()
class BatchRandAugment:
    """RandAugment with timm's increasing policies, drawn per image, on the batch's device.

    The same distribution as mmpretrain's ``RandAugment(policies='timm_increasing',
    num_policies, total_level, magnitude_level, magnitude_std, hparams=dict(pad_val,
    interpolation))`` applied to each image: ``num_policies`` operations chosen with
    replacement, each applied with probability ``prob``, at a magnitude level drawn from
    N(``magnitude_level``, ``magnitude_std``) clipped to [0, ``total_level``], signed at
    random where the operation has a direction. Images are rounded and clipped to [0, 255]
    after each operation, as the uint8 images of the CPU transforms are.

    Args:
        num_policies (int): Operations per image. Defaults to 2.
        magnitude_level (float): The mean magnitude level. Defaults to 9.
        magnitude_std (float): The level's standard deviation (0: fixed). Defaults to 0.5.
        total_level (float): The level of the largest magnitudes. Defaults to 10.
        prob (float): Probability that a chosen operation is applied. Defaults to 0.5.
        pad_val (float | Sequence[float]): R, G, B value of what geometric operations uncover.
            Defaults to 128.
        interpolation (str): ``'bicubic'``, ``'bilinear'`` or ``'nearest'`` for the geometric
            operations. Defaults to ``'bicubic'``.
        ops (Sequence[str], optional): Names of the operations to choose from (keys of
            ``TIMM_INCREASING``). Defaults to all 15.
    """

    def __init__(self, num_policies: int = 2, magnitude_level: float = 9,
                 magnitude_std: float = 0.5, total_level: float = 10, prob: float = 0.5,
                 pad_val: Union[float, Sequence[float]] = 128,
                 interpolation: str = 'bicubic', ops: Sequence[str] = None) -> None:
        ops = list(TIMM_INCREASING) if ops is None else list(ops)
        unknown = sorted(set(ops) - set(TIMM_INCREASING))
        if unknown:
            raise ValueError(f'BatchRandAugment: unknown operations {unknown}; choose from '
                             f'{list(TIMM_INCREASING)}')
        if not 0 <= magnitude_level <= total_level:
            raise ValueError(f'BatchRandAugment: magnitude_level {magnitude_level} is outside '
                             f'[0, total_level={total_level}]')
        self.ops = [TIMM_INCREASING[name] for name in ops]
        self.num_policies = num_policies
        self.magnitude_level = magnitude_level
        self.magnitude_std = magnitude_std
        self.total_level = total_level
        self.prob = prob
        self.pad_val = [float(pad_val)] * 3 if isinstance(pad_val, (int, float)) else pad_val
        self.interpolation = interpolation

    def _magnitudes(self, op: _Op, n: int, device) -> torch.Tensor:
        level = torch.full((n, ), float(self.magnitude_level), device=device)
        if self.magnitude_std > 0:
            level = (level + self.magnitude_std * torch.randn(n, device=device)).clamp(
                0, self.total_level)
        low, high = op.magnitude_range
        magnitude = low + (high - low) * level / self.total_level
        if op.signed:
            magnitude = torch.where(torch.rand(n, device=device) < 0.5, -magnitude, magnitude)
        return magnitude

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.size(0), images.device
        fill = images.new_tensor(self.pad_val).view(1, 3, 1, 1)
        images = images.clone()
        for _ in range(self.num_policies):
            choice = torch.randint(len(self.ops), (n, ), device=device)
            # images left alone this round (probability 1 - prob) get the choice past the last
            choice[torch.rand(n, device=device) >= self.prob] = len(self.ops)
            # one read-back per round: the images of each operation, grouped
            order = choice.argsort()
            counts = torch.bincount(choice, minlength=len(self.ops) + 1).tolist()
            for op, selected in zip(self.ops, order.split(counts)):
                if selected.numel() == 0:
                    continue
                magnitude = (self._magnitudes(op, selected.numel(), device)
                             if op.magnitude_range else None)
                extra = (fill, self.interpolation) if op.geometric else ()
                out = op.function(images[selected], magnitude, *extra)
                images[selected] = out.round().clamp(0, 255)
        return images


def build_batch_transforms(cfgs) -> list:
    """Build each config of ``cfgs`` from ``BATCH_TRANSFORMS``; callables pass as they are."""
    return [cfg if callable(cfg) else BATCH_TRANSFORMS.build(cfg) for cfg in cfgs or []]
