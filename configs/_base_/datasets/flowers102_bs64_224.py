# Oxford Flowers-102 (102 classes) at 224, the usual transfer protocol: fine-tune on the train and
# val splits (2,040 images), test on the test split (6,149). Data: $FLOWERS102_ROOT (default
# data/flowers102/) holding the release's jpg/image_*.jpg, imagelabels.mat and setid.mat.
_base_ = ['./transfer_bs64_224.py']

data_root = '{{$FLOWERS102_ROOT:data/flowers102/}}'

data_preprocessor = dict(num_classes=102)
train_dataloader = dict(dataset=dict(type='Flowers102', data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type='Flowers102', data_root=data_root, split='test'))
test_dataloader = val_dataloader
