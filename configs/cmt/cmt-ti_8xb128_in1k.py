# CMT-Ti on ImageNet-1k at 160 (released checkpoint: 79.0% top-1).
_base_ = ['./cmt-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='ti', drop_path_rate=0.1),
    head=dict(in_channels=368, dropout=0.1))

# Train and test at 160: the test resize keeps the 256/224 ratio of the base.
train_pipeline = _base_.train_pipeline
train_pipeline[1]['scale'] = 160  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1]['scale'] = 182  # ResizeEdge
test_pipeline[2]['crop_size'] = 160  # CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
