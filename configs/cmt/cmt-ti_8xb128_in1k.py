# CMT-Ti on ImageNet-1k at 160 (released checkpoint: 79.0% top-1).
# The released run: 8 GPUs x 256 images, lr 8e-4 per 512 images, warm-up from 1e-7, cosine to
# 1e-5 over 800 epochs (+ 10 cool-down), weight decay 0.05, drop-path 0.1, no model EMA.
# Here 8 x 128 images at the same lr per 512 images; --auto-scale-lr on 8 x 256 gives the
# released lr.
_base_ = ['./cmt-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='ti', drop_path_rate=0.1),
    head=dict(in_channels=368, dropout=0.1))

# Train and test at 160: the test resize keeps the 256/224 ratio of the base.
train_pipeline = _base_.train_pipeline
train_pipeline[1]['scale'] = 160  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1]['scale'] = 182  # ResizeEdge
test_pipeline[2]['crop_size'] = 160  # CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

base_lr = 8e-4 * 1024 / 512
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / base_lr, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=780, eta_min=1e-5, by_epoch=True, begin=20, end=800),
]
train_cfg = dict(max_epochs=810)
custom_hooks = []
