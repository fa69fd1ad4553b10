# Fine-tuning schedule (ours: the CMT paper gives no fine-tuning hyper-parameters): AdamW with lr
# 1e-4 per 512 images (a fifth of the pretraining lr), weight decay 0.05 (not on norms, biases or
# other 1-D parameters), 5 linear warm-up epochs, cosine to 1e-6 at epoch 100; validation and a
# checkpoint (the last two kept) every 10 epochs. Float32: add --amp on GPUs.
# The lr is for 8 GPUs x 64 images; --auto-scale-lr rescales it to the real batch.
# The runtime (mmpretrain's, with cmt_mm's safeguards) comes in here because its checkpoint hook is
# changed here (two bases of one config may not set the same key).
_base_ = ['../default_runtime_mmpretrain.py']

optim_wrapper = dict(
    # parameters of equal options in one group: AdamW batches its kernels per group, and
    # fused, it runs its whole update in one kernel per group (CIFAR-10 CMT-S step on an
    # H100: 161.7 -> 133.4 ms, docs/benchmarks.md)
    constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999),
                   fused=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=95, eta_min=1e-6, by_epoch=True, begin=5, end=100),
]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=10)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(checkpoint=dict(interval=10, max_keep_ckpts=2))

auto_scale_lr = dict(base_batch_size=512)
