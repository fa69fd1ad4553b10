# CMT-S trained from scratch on ImageNet-100 (100 ImageNet-1k classes, about 1,300 training and
# 50 validation images each) with the ImageNet-1k recipe at 224.
# Data: $IMAGENET100_ROOT (default data/imagenet100/) with train/<wnid>/*.JPEG and
# val/<wnid>/*.JPEG. A class's label is the rank of its folder name, so val/ must hold the same
# 100 folders as train/.
# For comparison, the spec's seed experiment (a Keras CMT-S trained with Adam, another recipe):
# 40.4% val top-1 after 34 epochs.
_base_ = ['./cmt-s_8xb128_in1k.py']

data_root = '{{$IMAGENET100_ROOT:data/imagenet100/}}'

model = dict(head=dict(num_classes=100))
data_preprocessor = dict(num_classes=100)

# mmpretrain's ImageNet dataset insists on the 1000 classes; CustomDataset reads any class folders.
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=_base_.train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
