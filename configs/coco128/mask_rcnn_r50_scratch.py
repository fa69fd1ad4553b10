# mmdet's Mask R-CNN with ResNet-50, trained from scratch (the COCO128 comparison).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

model = dict(backbone=dict(frozen_stages=-1, norm_eval=False, init_cfg=None))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
