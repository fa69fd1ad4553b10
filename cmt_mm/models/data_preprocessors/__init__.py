from .batch_transforms import BatchRandAugment, BatchRandomCrop, BatchRandomFlip, BatchResize
from .data_preprocessor import BatchAugmentClsDataPreprocessor

__all__ = [
    'BatchAugmentClsDataPreprocessor', 'BatchRandAugment', 'BatchRandomCrop', 'BatchRandomFlip',
    'BatchResize'
]
