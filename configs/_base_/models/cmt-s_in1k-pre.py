# CMT-S initialised from the converted ImageNet-1k classifier (tools/model_converters/cmt_to_mm.py
# writes checkpoints/cmt-s_in1k.pth): the backbone and the head's 1x1 conv and BatchNorm (the
# 1280-channel features the ImageNet classifier was trained on) load from it; only the final
# Linear starts afresh, with its own number of classes (mmengine's log notes the fc weights it
# skipped for their shape). Another converted checkpoint (the head needs the converter's key
# names; the backbone also reads the authors' original file), for both:
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH model.head.init_cfg.1.checkpoint=PATH
_base_ = ['./cmt-s_in1k.py']

pretrained = 'checkpoints/cmt-s_in1k.pth'

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    head=dict(init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
        dict(type='Pretrained', checkpoint=pretrained, prefix='head'),
    ]))
