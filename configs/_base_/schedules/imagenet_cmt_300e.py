# The released CMT-S schedule (cmt_pytorch's README and train.py, built on DeiT and timm 0.3.2):
# AdamW, lr 5e-4 per 512 images (DeiT's linear rule), weight decay 0.05 (not on norms, biases or
# other 1-D parameters, as timm's optimizer factory), warm-up from lr 1e-7 over 20 epochs, cosine
# to 1e-5 at epoch 300, then timm's 10 cool-down epochs at 1e-5 (the released train.py runs
# them: 310 epochs in all), mixed precision, and a model EMA with decay 0.99996 per iteration
# (timm's ModelEma, which averages the BatchNorm statistics too).
# The lr is for 8 GPUs x 128 images; --auto-scale-lr rescales it to the real batch.
base_lr = 5e-4 * 1024 / 512

optim_wrapper = dict(
    # parameters of equal options in one group: AdamW batches its kernels per group, and
    # fused, it runs its whole update in one kernel per group (CIFAR-10 CMT-S step on an
    # H100: 161.7 -> 133.4 ms, docs/benchmarks.md)
    constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999),
                   fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-7 / base_lr, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, eta_min=1e-5, by_epoch=True, begin=20, end=300),
]

train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=10)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [
    dict(type='EMAHook', momentum=4e-5, update_buffers=True, priority='ABOVE_NORMAL'),
]

auto_scale_lr = dict(base_batch_size=1024)
