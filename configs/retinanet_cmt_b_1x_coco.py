# RetinaNet + FPN with a CMT-B backbone, COCO 1x.
_base_ = './retinanet_cmt_s_1x_coco.py'

model = dict(
    backbone=dict(arch='b', init_cfg=dict(checkpoint='checkpoints/cmt-b_in1k.pth')),
    neck=dict(in_channels=[152, 304, 608]))
