# ImageNet-1k with the released CMT recipe (DeiT's train.py, the augmentations of mmpretrain's
# Swin base): RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25 with
# per-pixel random values, and repeated augmentation (each image 3 times per epoch, on different
# GPUs), which the released train.py does by default. Test: the short edge resized to 256/224 of
# the crop size (bicubic), then a center crop.
# Data: $IMAGENET_ROOT (default data/imagenet/) with train/ and val/ as mmpretrain's ImageNet reads
# them: one folder per class (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, the layout of the released
# code), or lists meta/train.txt, meta/val.txt of `relative/path.JPEG label` lines.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

data_root = '{{$IMAGENET_ROOT:data/imagenet/}}'

# cmt_mm's image loader: any image mode, bit depth and EXIF orientation becomes the upright
# 3-channel image; a file that cannot be read is skipped in training and scored as a black image
# in evaluation, with a warning naming it.
train_pipeline = [dict(type='cmt_mm.SafeLoadImageFromFile')] + _base_.train_pipeline[1:]
test_pipeline = [dict(type='cmt_mm.SafeLoadImageFromFile', on_error='black')
                 ] + _base_.test_pipeline[1:]

# default_collate: one tensor per batch from the workers (see cifar10-jpg_bs1024_64px.py).
train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    collate_fn=dict(type='default_collate'),
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
    sampler=dict(type='RepeatAugSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    collate_fn=dict(type='default_collate'),
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
