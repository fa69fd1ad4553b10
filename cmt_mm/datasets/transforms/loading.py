"""Image loading that survives unusual and broken image files."""
import io
import logging
from typing import Optional

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
    - any size is returned as is: the pipeline's resizing and padding deal with it.

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

    Args:
        to_float32 (bool): Return a float32 array instead of uint8. Defaults to False.
        on_error (str): 'skip' or 'black', see above. Defaults to 'skip'.
        backend_args (dict, optional): Arguments of the file backend that reads the file,
            as for mmcv's ``LoadImageFromFile``. Defaults to None (by the path's prefix).
    """

    def __init__(self,
                 to_float32: bool = False,
                 on_error: str = 'skip',
                 backend_args: Optional[dict] = None) -> None:
        if on_error not in ('skip', 'black'):
            raise ValueError(f"on_error must be 'skip' or 'black', got {on_error!r}")
        self.to_float32 = to_float32
        self.on_error = on_error
        self.backend_args = None if backend_args is None else backend_args.copy()

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        try:
            img = self.decode(fileio.get(filename, backend_args=self.backend_args))
        except Exception as err:  # any failure to read or decode is one bad sample
            img = self._handle_unreadable(filename, err, results)
            if img is None:
                return None

        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

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
                f"on_error='{self.on_error}', backend_args={self.backend_args})")
