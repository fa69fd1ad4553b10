# The fine-tuning schedule of transfer_adamw_100e.py, stretched for datasets of 2k-8k images
# (4-16 iterations per epoch at 8 x 64 images): 300 epochs, 10 of them warm-up; validation and
# checkpoints every 25 epochs.
_base_ = ['./transfer_adamw_100e.py']

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=290, eta_min=1e-6, by_epoch=True, begin=10, end=300),
]

train_cfg = dict(max_epochs=300, val_interval=25)

default_hooks = dict(checkpoint=dict(interval=25))
