"""mmpretrain's classification data preprocessor with augmentations run on the batch."""
from typing import Optional, Sequence

import torch
from mmpretrain.models import ClsDataPreprocessor

from cmt_mm.registry import MODELS
from .batch_transforms import build_batch_transforms


@MODELS.register_module()
class BatchAugmentClsDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` that also transforms the stacked batch on the model's device.

    For small images the data loader's per-sample work, not the model, limits a GPU's training
    speed; moving the augmentations here leaves the loader only decoding and packing. The
    batch, converted to RGB float values in [0, 255], goes through ``train_transforms`` when
    training, then through ``transforms`` (training and testing alike), then is normalised,
    with mmpretrain's batch augmentations (Mixup, CutMix) last, as in ``ClsDataPreprocessor``::

        data_preprocessor = dict(
            type='cmt_mm.BatchAugmentClsDataPreprocessor',
            mean=[125.307, 122.961, 113.8575], std=[51.5865, 50.847, 51.255], to_rgb=True,
            train_transforms=[
                dict(type='BatchRandomCrop', size=32, padding=4),
                dict(type='BatchRandomFlip', prob=0.5),
                dict(type='BatchRandAugment', num_policies=2, magnitude_level=9)],
            transforms=[dict(type='BatchResize', size=64)])

    The transforms are those of ``cmt_mm.models.data_preprocessors.batch_transforms``. The
    loader must stack its images into one tensor (``collate_fn=dict(type='default_collate')``),
    so they must all have one size.

    Args:
        train_transforms (Sequence[dict]): Batch transforms for training batches only.
        transforms (Sequence[dict]): Batch transforms for every batch, after the training ones.
        to_rgb (bool): Convert BGR images (as image loaders decode them) to RGB first.
        **kwargs: ``ClsDataPreprocessor``'s other arguments (``mean``, ``std``,
            ``num_classes``, ``batch_augments``, ...).
    """

    def __init__(self, train_transforms: Optional[Sequence[dict]] = None,
                 transforms: Optional[Sequence[dict]] = None, to_rgb: bool = False,
                 **kwargs) -> None:
        # the channel order is converted here, before the transforms, not by the parent
        super().__init__(to_rgb=False, **kwargs)
        self.convert_bgr_to_rgb = to_rgb
        self.train_transforms = build_batch_transforms(train_transforms)
        self.transforms = build_batch_transforms(transforms)

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = self.cast_data(data['inputs'])
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(
                'BatchAugmentClsDataPreprocessor transforms whole batches: set the '
                "dataloader's collate_fn=dict(type='default_collate') so that it stacks "
                f'the images into one tensor (got a {type(inputs).__name__})')
        if self.convert_bgr_to_rgb and inputs.size(1) == 3:
            inputs = inputs.flip(1)
        inputs = inputs.float()
        for transform in [*(self.train_transforms if training else []), *self.transforms]:
            inputs = transform(inputs)
        return super().forward({**data, 'inputs': inputs}, training)
