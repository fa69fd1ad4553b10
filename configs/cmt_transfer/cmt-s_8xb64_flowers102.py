# CMT-S fine-tuned on Flowers-102 at 224 from the converted ImageNet-1k classifier
# (checkpoints/cmt-s_in1k.pth), 300 epochs on 8 GPUs x 64 images: see the base files.
# The paper's result to reproduce (ImageNet-pretrained CMT-S at 224): 98.7% top-1.
_base_ = [
    '../_base_/models/cmt-s_in1k-pre.py',
    '../_base_/datasets/flowers102_bs64_224.py',
    '../_base_/schedules/transfer_adamw_300e.py',
]

model = dict(head=dict(num_classes=102))
