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

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    dataset=dict(data_root=data_root),
    sampler=dict(type='RepeatAugSampler', shuffle=True))
val_dataloader = dict(batch_size=128, num_workers=8, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
