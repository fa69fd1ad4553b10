# COCO 2017 instance segmentation (boxes and masks), as mmdet's base, with the data root
# overridable by the COCO_ROOT environment variable (default data/coco/). Expected layout:
#   $COCO_ROOT/annotations/instances_{train,val}2017.json, $COCO_ROOT/{train,val}2017/*.jpg
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

data_root = '{{$COCO_ROOT:data/coco/}}'

# cmt_mm's image loader: any image mode, bit depth and EXIF orientation becomes the upright
# 3-channel image; a file that cannot be read is skipped in training and scored as a black image
# in evaluation, with a warning naming it. Images under 32 px are trained on too (mmdet drops
# them): Resize scales them up, and padding to multiples of 32 meets CMT's minimum. An image over
# 32 times as long as wide (2000 x 4 px), which Resize would scale to 0 px, is padded with black
# at the bottom or right, with a warning; its boxes keep their coordinates.
train_pipeline = [dict(type='cmt_mm.SafeLoadImageFromFile')] + _base_.train_pipeline[1:]
test_pipeline = [dict(type='cmt_mm.SafeLoadImageFromFile', on_error='black')
                 ] + _base_.test_pipeline[1:]

train_dataloader = dict(
    dataset=dict(data_root=data_root, filter_cfg=dict(min_size=0), pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='cmt_mm.CocoMetric',  # scores predictions on padded, too-thin images too
    ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
