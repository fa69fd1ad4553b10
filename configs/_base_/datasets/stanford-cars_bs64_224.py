# Stanford Cars (196 classes) at 224: fine-tune on train (8,144 images), test on test (8,041).
# Data: $STANFORD_CARS_ROOT (default data/stanford_cars/) in either layout of the release:
# car_ims/*.jpg with cars_annos.mat, or cars_train/, cars_test/ with
# devkit/cars_train_annos.mat and devkit/cars_test_annos_withlabels.mat.
_base_ = ['./transfer_bs64_224.py']

data_root = '{{$STANFORD_CARS_ROOT:data/stanford_cars/}}'

data_preprocessor = dict(num_classes=196)
train_dataloader = dict(dataset=dict(type='StanfordCars', data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type='StanfordCars', data_root=data_root, split='test'))
test_dataloader = val_dataloader
