# CMT-S on ImageNet-1k at 224 (released checkpoint: 83.5% top-1), the released recipe: see the
# base files. CMT-Ti, XS and B change the resolution and the schedule.
_base_ = [
    '../_base_/models/cmt-s_in1k.py',
    '../_base_/datasets/imagenet_bs128_cmt-224.py',
    '../_base_/schedules/imagenet_cmt_300e.py',
    '../_base_/default_runtime_mmpretrain.py',
]
