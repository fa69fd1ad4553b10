# RetinaNet with CMT-S, trained from scratch (the COCO128 comparison;
# tools/analysis_tools/coco128_compare.py sets the data and the shared budget).
_base_ = '../retinanet_cmt_s_1x_coco.py'

# From scratch, CMT's outputs need a norm (see the backbone's out_norm_cfg); Swin-T has one.
model = dict(backbone=dict(norm_eval=False, out_norm_cfg=dict(type='BN'), init_cfg=None))
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
