# CMT-S trained from scratch on CIFAR-10 at 64x64 (see the _base_ files for the data and recipe).
#   python tools/train.py configs/cifar10_scratch/cmt-s_1xb1024_cifar10-64px.py --amp --amp-dtype bfloat16 --cuda-graph
# The seed experiment this beats: CMT-S at 32x32 with Adam 1e-3, 76.41% top-1 after 26 epochs.
_base_ = [
    '../_base_/models/cmt-s_in1k.py',
    '../_base_/datasets/cifar10-jpg_bs1024_64px.py',
    '../_base_/schedules/cifar10_scratch_adamw.py',
]

model = dict(
    # position biases shaped for 64x64 inputs: no resizing at run time
    backbone=dict(pretrain_img_size=64),
    head=dict(num_classes=10),
    # no Mixup/CutMix: they pay off over long schedules, not in minutes
    train_cfg=None)

# the epochs that fit 10 minutes of one GPU with --cuda-graph: 90.04% in 424 s on an H100 (run 7),
# 90.03% / 90.17% in 535 / 561 s on an H200 before FastLayerNorm (run 6; docs/results.md)
max_epochs = 66
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = _base_.param_scheduler
param_scheduler[1]['end'] = max_epochs  # the cosine
