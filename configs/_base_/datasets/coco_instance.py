# COCO 2017 instance segmentation (boxes and masks), as mmdet's base, with the data root
# overridable by the COCO_ROOT environment variable (default data/coco/). Expected layout:
#   $COCO_ROOT/annotations/instances_{train,val}2017.json, $COCO_ROOT/{train,val}2017/*.jpg
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

data_root = '{{$COCO_ROOT:data/coco/}}'

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
