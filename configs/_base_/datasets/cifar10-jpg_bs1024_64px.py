# CIFAR-10 for training from scratch, read from JPEG class folders:
#   $CIFAR10_JPG_ROOT/{train,test}/<class>/*.jpg   (default data/cifar10-jpg/;
#   ../shared/data/cifar10/cifar10-jpg.tar.gz unpacks to this layout)
# 50,000 training and 10,000 test images. The 32x32 images are upsampled to 64x64 after the
# standard CIFAR augmentation (reflect-pad by 4 and crop 32x32, horizontal flip) and RandAugment
# (two operations at magnitude 6 of 10): CMT's first stage has stride 4, so at 32x32 it would see
# an 8x8 map and the last stage a single pixel. Without RandAugment CMT-S fits the training set
# within 40 epochs (docs/results.md, run 3); at magnitude 9 it was far from fitting it after 32
# (run 4), and 60 epochs is still a short schedule.
data_root = '{{$CIFAR10_JPG_ROOT:data/cifar10-jpg/}}'
dataset_type = 'CustomDataset'

# The augmentations run on the whole batch on the GPU (cmt_mm.BatchAugmentClsDataPreprocessor),
# the same ones as mmpretrain's RandomCrop, RandomFlip, RandAugment('timm_increasing') and Resize
# per image: run per image in the loading workers, they left CMT-S's step waiting (run 4's
# epochs took 10-13 s for 5-6 s of model steps; run 5's, on the GPU, 7.5 s; docs/results.md).
data_preprocessor = dict(
    type='cmt_mm.BatchAugmentClsDataPreprocessor',
    num_classes=10,
    # CIFAR-10's RGB mean and std; the loader decodes to BGR
    mean=[125.307, 122.961, 113.8575],
    std=[51.5865, 50.847, 51.255],
    to_rgb=True,
    train_transforms=[
        dict(type='BatchRandomCrop', size=32, padding=4, padding_mode='reflect'),
        dict(type='BatchRandomFlip', prob=0.5),
        dict(type='BatchRandAugment', num_policies=2, magnitude_level=6, magnitude_std=0.5,
             total_level=10, pad_val=[125, 123, 114], interpolation='bicubic'),  # pad: mean
    ],
    transforms=[dict(type='BatchResize', size=64, interpolation='bicubic')])

# cmt_mm's image loader skips (training) or blacks out (testing) an unreadable file, with a warning.
# It keeps the decoded images (150 MB for the training set in each worker): opening and decoding
# a 32x32 JPEG is most of what a loading worker does per sample.
decoded_cache_bytes = 256 * 2**20
train_pipeline = [
    dict(type='cmt_mm.SafeLoadImageFromFile', cache_max_bytes=decoded_cache_bytes),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='cmt_mm.SafeLoadImageFromFile', on_error='black',
         cache_max_bytes=decoded_cache_bytes),
    dict(type='PackInputs'),
]

# default_collate stacks each batch into one tensor in the worker: mmengine's default (a list
# of per-image tensors) costs the training process ~1 s per 1024 images to receive. Training drops
# the last partial batch so that every step has one shape (one torch.compile or CUDA graph).
train_dataloader = dict(
    batch_size=1024,
    num_workers=12,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    drop_last=True,
    dataset=dict(
        type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=12,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type, data_root=data_root, data_prefix='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
