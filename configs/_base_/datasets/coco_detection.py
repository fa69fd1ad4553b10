# COCO 2017 detection (boxes only); see coco_instance.py for the data root and layout.
_base_ = './coco_instance.py'

_base_.train_pipeline[1]['with_mask'] = False  # LoadAnnotations
_base_.test_pipeline[2]['with_mask'] = False
train_dataloader = dict(dataset=dict(pipeline=_base_.train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=_base_.test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
