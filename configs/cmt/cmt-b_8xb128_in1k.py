# CMT-B on ImageNet-1k at 256 (released checkpoint: 84.5% top-1).
_base_ = ['./cmt-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.25),
    head=dict(in_channels=608, dropout=0.3))

# Train and test at 256: the test resize keeps the 256/224 ratio of the base.
train_pipeline = _base_.train_pipeline
train_pipeline[1]['scale'] = 256  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1]['scale'] = 292  # ResizeEdge
test_pipeline[2]['crop_size'] = 256  # CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
