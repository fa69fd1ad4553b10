# Mask R-CNN + FPN with a CMT-S backbone, COCO 1x (paper: box AP 44.6, mask AP 40.7).
# The backbone starts from the converted ImageNet checkpoint (tools/model_converters/cmt_to_mm.py);
# set its path with --cfg-options model.backbone.init_cfg.checkpoint=PATH.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/datasets/coco_instance.py',
    './_base_/schedules/detection_adamw_1x.py',
    './_base_/default_runtime_mmdet.py',
]
custom_imports = dict(imports=['cmt_mm.models', 'cmt_mm.engine'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='cmt_mm.CMT',
        arch='s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        # batches of 2 per GPU are too small to estimate BatchNorm statistics
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cmt-s_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
