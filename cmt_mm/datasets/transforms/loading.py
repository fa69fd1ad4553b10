"""Image loading that survives unusual and broken image files."""
import io
import logging
import math
from typing import Dict, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.logging import print_log
from PIL import Image, ImageOps, UnidentifiedImageError

from cmt_mm.registry import TRANSFORMS

# Pillow's modes for 16-bit samples ('I' holds them in 32 bits in some Pillow versions).
SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


@TRANSFORMS.register_module()
class SafeLoadImageFromFile(BaseTransform):
    """Load any image file as a 3-channel uint8 BGR array; log and skip files that cannot be read.

    A drop-in replacement for mmcv's ``LoadImageFromFile`` (same keys read and written) in mmdet
    and mmpretrain pipelines: ``dict(type='cmt_mm.SafeLoadImageFromFile')``. It decodes with
    Pillow, because Pillow reports a truncated file as an error on every version, whereas
    OpenCV's ``imdecode`` returns None for it (5.x) or a partly grey image with no error (4.x),
    and mmcv then fails an ``assert`` that ends the run. Decoding:

    - grayscale, palette, 1-bit, CMYK, RGBA and LA images become 3-channel (the alpha channel
      is dropped, as OpenCV does);
    - 16-bit images keep their top 8 bits, as OpenCV does (Pillow's own conversion and mmcv's
      pillow backend saturate them to white);
    - the EXIF orientation is applied, as mmcv's default OpenCV loading does, so the image is
      the upright one that annotation tools show;
    - any size is kept, the pipeline's resizing and padding deal with it, except an image whose
      long side is more than ``max_aspect_ratio`` times its short side (say 2000 x 4 pixels),
      which is padded, see below.

    Keeping the aspect ratio, mmdet's ``Resize`` scales the short side of a 2000 x 4 image to 0
    pixels (at 128 x 128; at 1333 x 800 from 2667:1 on), and OpenCV raises an error that ends
    the run; at 1 pixel, mmdet's ``PackDetInputs`` fails on the image once flipped along it.
    mmpretrain's ``ResizeEdge`` to a short side of 256 makes a 1 x 40000 image 10 million
    pixels long and runs out of memory. Such an image is padded with black at the bottom (or
    right) until its short side is 1/``max_aspect_ratio`` of its long side, with a warning
    naming it, and the padded image stands in for the file: ``ori_shape`` is its size.
    Padding at the bottom and right keeps every pixel's coordinates, so

    - the annotations' boxes and polygons stay valid as they are, and their RLE masks are
      padded too: mmdet's ``LoadAnnotations`` draws masks at ``ori_shape``, and ``Resize``
      resizes them with the image;
    - predictions come back in the file's coordinates, on the padded size: mmdet clips boxes to
      the (padded) image, so one may reach into the padding, and pastes masks on an image of
      ``ori_shape``. They cannot have the file's size: on the CPU, mmdet fails to paste a mask
      whose box lies in the padding, outside such an image. pycocotools matches no mask of
      another size than the annotated image's: ``cmt_mm.CocoMetric`` (the shipped configs'
      evaluator) cuts the predictions back to that size; mmdet's ``CocoMetric`` would count
      these masks as not found. ``cmt_mm.DetLocalVisualizer`` (``--show-dir``) pads the file's
      image the same way before drawing them; mmdet's would fail.

    For an image identical to what mmcv's default loading returns for ordinary files (the same
    libjpeg-turbo decoder), about 10% slower.

    A file that is missing, empty, truncated or not an image is logged as a warning that names
    it and the reason, and then:

    - ``on_error='skip'`` (for training): the transform returns None, and mmengine's
      ``BaseDataset`` loads another, random sample instead (up to its ``max_refetch`` times), so
      one bad file does not end a run;
    - ``on_error='black'`` (for evaluation): a black image of the size the annotations record
      (1 x 1 without one) stands in for it, so that every sample is still scored; the image
      counts as one where the model found nothing. mmengine's datasets in test mode raise an
      error when a pipeline returns None, and mmpretrain's would score a random other sample.

    With ``cache_max_bytes``, each data-loading process keeps the images it decodes, by path, up
    to that many bytes, and later epochs skip reading and decoding them. For tiny images this is
    a large part of the loading cost: a 32 x 32 CIFAR JPEG takes about as long to open and
    decode as RandAugment takes on it. Each worker process fills its own cache (CIFAR-10's
    training set is 150 MB decoded), and only ``persistent_workers=True`` keeps it from one
    epoch to the next. When the cache is full, a warning says so once and later images are
    decoded every time.

    Args:
        to_float32 (bool): Return a float32 array instead of uint8. Defaults to False.
        on_error (str): 'skip' or 'black', see above. Defaults to 'skip'.
        max_aspect_ratio (float, optional): The longest image (long side over short side)
            kept as it is; a longer one is padded, see above. The default keeps the short side
            at 2 pixels or more where resizing leaves the long side 48 pixels or more. None:
            no padding. Defaults to 32.
        backend_args (dict, optional): Arguments of the file backend that reads the file,
            as for mmcv's ``LoadImageFromFile``. Defaults to None (by the path's prefix).
        cache_max_bytes (int): Bytes of decoded images each process keeps, see above.
            Defaults to 0 (no cache).
    """

    def __init__(self,
                 to_float32: bool = False,
                 on_error: str = 'skip',
                 max_aspect_ratio: Optional[float] = 32.,
                 backend_args: Optional[dict] = None,
                 cache_max_bytes: int = 0) -> None:
        if on_error not in ('skip', 'black'):
            raise ValueError(f"on_error must be 'skip' or 'black', got {on_error!r}")
        if max_aspect_ratio is not None and not max_aspect_ratio >= 1:
            raise ValueError(f'max_aspect_ratio must be 1 or more (or None: no padding), got '
                             f'{max_aspect_ratio!r}')
        self.to_float32 = to_float32
        self.on_error = on_error
        self.max_aspect_ratio = max_aspect_ratio
        self.backend_args = None if backend_args is None else backend_args.copy()
        if not (isinstance(cache_max_bytes, int) and cache_max_bytes >= 0):
            raise ValueError(f'cache_max_bytes must be a whole number of bytes, 0 for no cache; '
                             f'got {cache_max_bytes!r}')
        self.cache_max_bytes = cache_max_bytes
        self._cache: Dict[str, np.ndarray] = {}
        self._cached_bytes = 0
        self._cache_full = False

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        img = self._cache.get(filename)
        if img is not None:
            img = img.copy()  # later transforms may change it in place
        else:
            try:
                img = self.decode(fileio.get(filename, backend_args=self.backend_args))
            except Exception as err:  # any failure to read or decode is one bad sample
                img = self._handle_unreadable(filename, err, results)
                if img is None:
                    return None
            else:
                self._remember(filename, img)

        padded_shape = self._padded_shape(img.shape[:2])
        if padded_shape != img.shape[:2]:
            img = self._pad_thin(img, padded_shape, filename, results)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _remember(self, filename: str, img: np.ndarray) -> None:
        if not self.cache_max_bytes or self._cache_full:
            return
        if self._cached_bytes + img.nbytes > self.cache_max_bytes:
            print_log(f'the decoded-image cache is full at {len(self._cache)} images '
                      f'({self._cached_bytes / 2**20:.0f} MiB of cache_max_bytes='
                      f'{self.cache_max_bytes}) in this process; other images are decoded every '
                      'time', logger='current', level=logging.WARNING)
            self._cache_full = True
            return
        self._cache[filename] = img.copy()
        self._cached_bytes += img.nbytes

    def _padded_shape(self, shape: Tuple[int, int]) -> Tuple[int, int]:
        """(height, width) with the short side grown to 1/max_aspect_ratio of the long side."""
        if self.max_aspect_ratio is None:
            return shape
        short_side = math.ceil(max(shape) / self.max_aspect_ratio)
        return max(shape[0], short_side), max(shape[1], short_side)

    def _pad_thin(self, img: np.ndarray, shape: Tuple[int, int], filename: str,
                  results: dict) -> np.ndarray:
        height, width = img.shape[:2]
        side = 'bottom' if shape[0] > height else 'right'
        print_log(f'the image {filename} is {width} x {height} pixels, too thin to resize: '
                  f'padded with black at the {side} to {shape[1]} x {shape[0]} (over '
                  f'max_aspect_ratio={self.max_aspect_ratio:g}); boxes keep their coordinates, '
                  'masks get the padded size', logger='current', level=logging.WARNING)
        padded = np.zeros((*shape, img.shape[2]), img.dtype)
        padded[:height, :width] = img
        for instance in results.get('instances', []):
            mask = instance.get('mask')
            if isinstance(mask, dict) and 'counts' in mask and 'size' in mask:
                instance['mask'] = pad_rle(mask, shape)
        return padded

    @staticmethod
    def decode(content: bytes) -> np.ndarray:
        """The upright image in ``content`` as an (H, W, 3) uint8 BGR array."""
        try:
            image = Image.open(io.BytesIO(content))
        except UnidentifiedImageError:
            raise ValueError('empty, or not in an image format Pillow knows') from None
        with image:
            image.load()  # decodes now: a truncated file raises OSError here
            image = ImageOps.exif_transpose(image)
            if image.mode in SIXTEEN_BIT_MODES:
                top_byte = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
                image = Image.fromarray(top_byte.astype(np.uint8))
            rgb = np.asarray(image.convert('RGB'))
        return np.ascontiguousarray(rgb[..., ::-1])

    def _handle_unreadable(self, filename: str, err: Exception,
                           results: dict) -> Optional[np.ndarray]:
        reason = f'{type(err).__name__}: {err}'
        if self.on_error == 'skip':
            print_log(f'cannot read the image {filename} ({reason}); skipped, another sample '
                      'is loaded instead', logger='current', level=logging.WARNING)
            return None
        print_log(f'cannot read the image {filename} ({reason}); a black image stands in for '
                  'it, so it is scored as an image where nothing was found',
                  logger='current', level=logging.WARNING)
        return np.zeros((results.get('height', 1), results.get('width', 1), 3), np.uint8)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(to_float32={self.to_float32}, '
                f"on_error='{self.on_error}', max_aspect_ratio={self.max_aspect_ratio}, "
                f'backend_args={self.backend_args}, cache_max_bytes={self.cache_max_bytes})')


def pad_rle(rle: dict, shape: Tuple[int, int]) -> dict:
    """A COCO RLE mask (compressed or not) on a canvas of ``shape`` grown at the bottom and
    right, compressed, as mmdet's ``LoadAnnotations`` reads it (``counts`` a str)."""
    from pycocotools import mask as mask_utils  # a dependency of detection only

    height, width = rle['size']
    if isinstance(rle['counts'], list):
        rle = mask_utils.frPyObjects(rle, height, width)
    mask = np.zeros(shape, np.uint8, order='F')
    mask[:height, :width] = mask_utils.decode(rle)
    padded = mask_utils.encode(mask)
    return dict(size=[int(n) for n in padded['size']], counts=padded['counts'].decode())
