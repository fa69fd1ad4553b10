# A small Mask R-CNN with a CMT backbone trained from scratch on the synthetic shapes dataset
# (cmt_mm/utils/synthetic_coco.py): 4 classes, 128x128 images. Sized to train in under ten
# minutes on two CPU cores; `python tools/run_demo.py` generates the data, trains, evaluates
# and draws predictions. The data root is overridable with SHAPES_ROOT.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_mmdet.py',
]
custom_imports = dict(imports=['cmt_mm.models'], allow_failed_imports=False)

image_size = 128
classes = ('circle', 'square', 'triangle', 'star')
metainfo = dict(
    classes=classes, palette=[(220, 20, 60), (0, 130, 230), (30, 170, 60), (250, 170, 30)])
num_classes = len(classes)
fpn_channels = 64

model = dict(
    backbone=dict(
        _delete_=True,
        type='cmt_mm.CMT',
        arch=dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 2, 1], mlp_ratio=2.,
                  stem_channels=16),
        pretrain_img_size=image_size,
        out_indices=(0, 1, 2, 3),
        # From scratch, with batches of 8: BatchNorm statistics must be learnt.
        norm_eval=False,
        init_cfg=None),
    # CMT's outputs carry no norm; BatchNorm in the FPN makes training from scratch converge
    # faster (measured after 8 epochs: box mAP 0.86 with it, 0.79 without).
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=fpn_channels,
              norm_cfg=dict(type='BN', requires_grad=True)),
    rpn_head=dict(
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        # Objects are 15-50 px: anchors of 16, 32, 64, ... px instead of 32, 64, 128, ...
        anchor_generator=dict(scales=[4])),
    # One sample per RoIAlign bin instead of an adaptive count: mmcv's CPU RoIAlign backward is
    # a large part of a step, and these RoIs span at most ~20 feature pixels.
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=1), out_channels=fpn_channels),
        bbox_head=dict(in_channels=fpn_channels, fc_out_channels=128, num_classes=num_classes),
        mask_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=1), out_channels=fpn_channels),
        mask_head=dict(num_convs=2, in_channels=fpn_channels, conv_out_channels=fpn_channels,
                       num_classes=num_classes)),
    # A few objects per image: fewer proposals (NMS is quadratic) and sampled RoIs suffice.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

# Data: the images already have their final size; Resize only records the scale factor.
data_root = '{{$SHAPES_ROOT:work_dirs/demo/shapes/}}'
_base_.train_pipeline[2]['scale'] = (image_size, image_size)  # Resize
_base_.test_pipeline[1]['scale'] = (image_size, image_size)
# Two CPU cores: one loader worker keeps decoding off the training process.
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=_base_.train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Schedule: AdamW with a linear warm-up, then a step decay for the last epochs.
# 6 epochs of 100 steps: 4-7 minutes on two shared CPU cores (8 epochs: box mAP 0.86).
max_epochs = 6
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[5], gamma=0.1),
]
optim_wrapper = dict(
    # parameters of equal options in one group: AdamW batches its kernels per group
    constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2))
auto_scale_lr = dict(base_batch_size=8)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
