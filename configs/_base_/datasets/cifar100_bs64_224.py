# CIFAR-100 (100 classes; 50,000 training and 10,000 test images of 32 x 32) upsampled to 224 for
# fine-tuning, like CIFAR-10. Data: $CIFAR100_ROOT (default data/cifar100/) holding the python
# version as released, cifar-100-python/{train,test,meta}.
_base_ = ['./cifar10_bs64_224.py']

data_root = '{{$CIFAR100_ROOT:data/cifar100/}}'

data_preprocessor = dict(num_classes=100)
train_dataloader = dict(dataset=dict(type='CIFAR100', data_root=data_root))
val_dataloader = dict(dataset=dict(type='CIFAR100', data_root=data_root))
test_dataloader = val_dataloader
