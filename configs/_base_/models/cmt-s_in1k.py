# An mmpretrain ImageClassifier: CMT-S backbone and the released CMT head, ImageNet-1k.
custom_imports = dict(imports=['cmt_mm.models', 'cmt_mm.engine'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='cmt_mm.CMT', arch='s', out_indices=(3, ), drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='cmt_mm.CMTClsHead',
        num_classes=1000,
        in_channels=512,
        dropout=0.1,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
