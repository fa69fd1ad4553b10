# A ViT of CMT-S's size (DeiT-S: 12 blocks, 384 channels, 21.7M parameters) trained from scratch
# on CIFAR-10 with CMT-S's data, recipe and budget; 8x8 patches give 64 tokens at 64x64.
#   python tools/train.py configs/cifar10_scratch/vit-s-p8_1xb1024_cifar10-64px.py --amp --amp-dtype bfloat16 --cuda-graph
# The seed experiment this beats: a ViT at 32x32 with Adam 1e-3, 62.73% top-1 after 36 epochs.
_base_ = [
    'mmpretrain::_base_/models/vit-base-p16.py',
    '../_base_/datasets/cifar10-jpg_bs1024_64px.py',
    '../_base_/schedules/cifar10_scratch_adamw.py',
]

model = dict(
    backbone=dict(arch='deit-small', img_size=64, patch_size=8, drop_rate=0., drop_path_rate=0.1),
    head=dict(
        num_classes=10,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

# 90 epochs: 74.84% in 494 s of one H100 with --cuda-graph (run 7, docs/results.md), within the
# 10 minutes that CMT-S gets
max_epochs = 90
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = _base_.param_scheduler
param_scheduler[1]['end'] = max_epochs  # the cosine
