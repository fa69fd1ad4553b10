# From scratch on CIFAR-10, one GPU, a fixed wall-clock budget: AdamW (lr 2e-3 for a batch of 1024,
# weight decay 0.05, none on norms, biases and position biases), 3 epochs of linear warm-up, then
# cosine to 1e-5; gradients clipped at 5. Train with `--amp --amp-dtype bfloat16` on GPUs.
# The epochs are what fits the budget on one H100 (docs/results.md); the variant configs set them.
# Validation every 5 epochs; a checkpoint (the last two kept) every 10, as saving one each epoch
# would spend a tenth of the budget. The runtime comes in here because its checkpoint hook is
# changed here (two bases of one config may not set the same key).
_base_ = ['../default_runtime_mmpretrain.py']

optim_wrapper = dict(
    # parameters of equal options in one group: AdamW batches its kernels per group, and
    # fused, it runs its whole update in one kernel per group (CIFAR-10 CMT-S step on an
    # H100: 161.7 -> 133.4 ms, docs/benchmarks.md)
    constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05, betas=(0.9, 0.999), fused=True),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'.position_bias': dict(decay_mult=0.),
                     '.cls_token': dict(decay_mult=0.),
                     '.pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=5.0))

warmup_epochs = 3
max_epochs = 30
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs,
         end=max_epochs, convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()

auto_scale_lr = dict(base_batch_size=1024)

default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))
