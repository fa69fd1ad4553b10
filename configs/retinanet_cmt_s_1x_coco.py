# RetinaNet + FPN with a CMT-S backbone, COCO 1x (paper: AP 44.3).
# The backbone starts from the converted ImageNet checkpoint (tools/model_converters/cmt_to_mm.py);
# set its path with --cfg-options model.backbone.init_cfg.checkpoint=PATH.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    './_base_/datasets/coco_detection.py',
    './_base_/schedules/detection_adamw_1x.py',
    './_base_/default_runtime_mmdet.py',
]
custom_imports = dict(imports=['cmt_mm.models', 'cmt_mm.engine'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='cmt_mm.CMT',
        arch='s',
        # only the stages FPN uses: unused parameters break DDP
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        # batches of 2 per GPU are too small to estimate BatchNorm statistics
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cmt-s_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5),
    # fp16 (--amp) overflows mmcv's focal loss kernel; float32 is the same loss otherwise
    bbox_head=dict(loss_cls=dict(type='cmt_mm.Float32FocalLoss')))
