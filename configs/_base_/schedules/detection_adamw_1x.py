# The CMT paper's COCO 1x protocol: 12 epochs, AdamW lr 1e-4 (weight decay 0.05, none on norms
# and biases), linear warm-up over 1000 iterations, lr x0.1 after epochs 8 and 11;
# 16 images per step (8 GPUs x 2).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]

optim_wrapper = dict(
    # parameters of equal options in one group: AdamW batches its kernels per group, and
    # fused, it runs its whole update in one kernel per group (CIFAR-10 CMT-S step on an
    # H100: 161.7 -> 133.4 ms, docs/benchmarks.md)
    constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05,
                   fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))

auto_scale_lr = dict(base_batch_size=16)
