# CMT-XS on ImageNet-1k at 192 (released checkpoint: 81.8% top-1).
_base_ = ['./cmt-s_8xb128_in1k.py']

model = dict(
    backbone=dict(arch='xs', drop_path_rate=0.1),
    head=dict(in_channels=416, dropout=0.1))

# Train and test at 192: the test resize keeps the 256/224 ratio of the base.
train_pipeline = _base_.train_pipeline
train_pipeline[1]['scale'] = 192  # RandomResizedCrop
test_pipeline = _base_.test_pipeline
test_pipeline[1]['scale'] = 219  # ResizeEdge
test_pipeline[2]['crop_size'] = 192  # CenterCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
