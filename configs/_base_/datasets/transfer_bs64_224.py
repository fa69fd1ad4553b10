# Fine-tuning an ImageNet-pretrained classifier at 224 on a small dataset. Training keeps the
# pretraining's augmentations (RandomResizedCrop, flip, RandAugment rand-m9-mstd0.5-inc1, random
# erasing 0.25); testing resizes the whole image to 224 x 224 (no crop: CIFAR's 32 x 32 images
# have no border to spare, and cropping cuts off parts of cars and flowers). The normalisation is
# ImageNet's, which the pretrained weights expect. The dataset files add the dataset, its data
# root and its number of classes.
data_preprocessor = dict(
    # RGB mean and std; LoadImageFromFile decodes to BGR
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

# cmt_mm's image loader: any image mode, bit depth and EXIF orientation becomes the upright
# 3-channel image; a file that cannot be read is skipped in training and scored as a black image
# in evaluation, with a warning naming it.
train_pipeline = [
    dict(type='cmt_mm.SafeLoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]

test_pipeline = [
    dict(type='cmt_mm.SafeLoadImageFromFile', on_error='black'),
    dict(type='Resize', scale=(224, 224), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs'),
]

# default_collate: one tensor per batch from the workers (see cifar10-jpg_bs1024_64px.py).
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator
