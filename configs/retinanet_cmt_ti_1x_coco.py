# RetinaNet + FPN with a CMT-Ti backbone, COCO 1x.
_base_ = './retinanet_cmt_s_1x_coco.py'

model = dict(
    backbone=dict(arch='ti', init_cfg=dict(checkpoint='checkpoints/cmt-ti_in1k.pth')),
    neck=dict(in_channels=[92, 184, 368]))
