# mmdet's Mask R-CNN with Swin-T, trained from scratch (the COCO128 comparison).
_base_ = 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'

model = dict(backbone=dict(init_cfg=None))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
