# Oxford-IIIT Pets (37 breeds) at 224: fine-tune on trainval (3,680 images), test on test (3,669).
# Data: $OXFORD_PETS_ROOT (default data/oxford_pets/) holding the release's images/*.jpg and
# annotations/{trainval,test}.txt.
_base_ = ['./transfer_bs64_224.py']

data_root = '{{$OXFORD_PETS_ROOT:data/oxford_pets/}}'

data_preprocessor = dict(num_classes=37)
train_dataloader = dict(dataset=dict(type='OxfordIIITPet', data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type='OxfordIIITPet', data_root=data_root, split='test'))
test_dataloader = val_dataloader
