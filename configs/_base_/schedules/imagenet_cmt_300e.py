# The released CMT schedule: AdamW, base lr 5e-4 per 512 images, weight decay 0.05 (not on norms,
# biases or other 1-D parameters), 20 linear warm-up epochs, cosine to 1e-5 over 300 epochs,
# mixed precision and a model EMA.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8,
                   betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=280, eta_min=1e-5, by_epoch=True, begin=20, end=300),
]

train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=10)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL')]

# The learning rate above is for 8 GPUs x 128 images; --auto-scale-lr rescales it.
auto_scale_lr = dict(base_batch_size=1024)
