# ImageNet-1k with the released CMT recipe (the same augmentations as Swin's):
# RandomResizedCrop, flip, RandAugment m9-mstd0.5, random erasing 0.25; test resize 256/224 + crop.
# Expects data/imagenet/{train,val}/ (and meta/ lists) as mmpretrain's ImageNet dataset does.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

train_dataloader = dict(batch_size=128, num_workers=8)
val_dataloader = dict(batch_size=128, num_workers=8)
test_dataloader = val_dataloader
