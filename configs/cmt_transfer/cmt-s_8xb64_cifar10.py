# CMT-S fine-tuned on CIFAR-10 at 224 from the converted ImageNet-1k classifier
# (checkpoints/cmt-s_in1k.pth), 100 epochs on 8 GPUs x 64 images: see the base files.
# The paper's result to reproduce (ImageNet-pretrained CMT-S at 224): 99.2% top-1.
_base_ = [
    '../_base_/models/cmt-s_in1k-pre.py',
    '../_base_/datasets/cifar10_bs64_224.py',
    '../_base_/schedules/transfer_adamw_100e.py',
]

model = dict(head=dict(num_classes=10))
