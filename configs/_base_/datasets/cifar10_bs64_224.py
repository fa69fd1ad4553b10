# CIFAR-10 (10 classes; 50,000 training and 10,000 test images of 32 x 32) upsampled to 224 for
# fine-tuning. Data: $CIFAR10_ROOT (default data/cifar10/) holding the python version as
# released, cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}. No download: a missing
# or corrupt copy (mmpretrain checks the files' MD5) is an error.
_base_ = ['./transfer_bs64_224.py']

data_root = '{{$CIFAR10_ROOT:data/cifar10/}}'

# The images come decoded, in RGB order: no file to load, no channel swap, and RGB fill colours.
# RandomResizedCrop crops the 32 x 32 image and upsamples the crop, as the released code does for
# CIFAR at 224.
data_preprocessor = dict(num_classes=10, to_rgb=False)
train_pipeline = _base_.train_pipeline[1:]
train_pipeline[2]['hparams']['pad_val'] = [round(x) for x in _base_.bgr_mean[::-1]]  # RandAugment
train_pipeline[3]['fill_color'] = _base_.bgr_mean[::-1]  # RandomErasing
train_pipeline[3]['fill_std'] = _base_.bgr_std[::-1]
test_pipeline = _base_.test_pipeline[1:]

train_dataloader = dict(
    dataset=dict(
        type='CIFAR10',
        data_root=data_root,
        split='train',
        download=False,
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type='CIFAR10',
        data_root=data_root,
        split='test',
        download=False,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
