# RetinaNet + FPN with a CMT-XS backbone, COCO 1x.
_base_ = './retinanet_cmt_s_1x_coco.py'

model = dict(
    backbone=dict(arch='xs', init_cfg=dict(checkpoint='checkpoints/cmt-xs_in1k.pth')),
    neck=dict(in_channels=[104, 208, 416]))
