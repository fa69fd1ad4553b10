# CMT-B on ImageNet-1k at 256 (released checkpoint: 84.5% top-1).
# The released run: 8 GPUs x 64 images, lr 5e-4 per 512 images, warm-up from 1e-6, cosine to
# 2e-5 over 300 epochs (+ 10 cool-down), weight decay 0.05, drop-path 0.25, head dropout 0.3,
# model EMA with decay 0.99996 per iteration. Here 8 x 128 images at the same lr per 512 images,
# and the EMA momentum doubled (half the iterations, the same average over images); 8 x 64 with
# --auto-scale-lr gives the released lr.
_base_ = ['./cmt-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.25),
    head=dict(in_channels=608, dropout=0.3))

# Train and test at 256: the test resize keeps the 256/224 ratio of the base.
train_pipeline = _base_.train_pipeline
train_pipeline[1]['scale'] = 256  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1]['scale'] = 292  # ResizeEdge
test_pipeline[2]['crop_size'] = 256  # CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / _base_.base_lr, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, eta_min=2e-5, by_epoch=True, begin=20, end=300),
]
custom_hooks = [
    dict(type='EMAHook', momentum=8e-5, update_buffers=True, priority='ABOVE_NORMAL'),
]
