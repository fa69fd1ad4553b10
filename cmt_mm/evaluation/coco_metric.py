"""COCO evaluation of predictions made on padded images."""
from typing import Sequence

from mmdet.evaluation import CocoMetric as MMDetCocoMetric

from cmt_mm.registry import METRICS


@METRICS.register_module()
class CocoMetric(MMDetCocoMetric):
    """mmdet's ``CocoMetric``, for predictions larger than the annotated image.

    ``cmt_mm.SafeLoadImageFromFile`` pads an image far longer than wide (2000 x 4 pixels) at
    the bottom or right, so mmdet pastes its masks on the padded size and may clip its boxes to
    it; pycocotools matches no mask whose size differs from the annotated image's. Each
    prediction is cut back to the size in the annotation file before it is scored. Padding at
    the bottom and right keeps coordinates, so cutting moves nothing.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        if self._coco_api is not None:  # without an annotation file, sizes are ori_shape's
            for sample in data_samples:
                image = self._coco_api.imgs.get(sample['img_id'])
                if image is not None:
                    self._cut_to(sample['pred_instances'], image['height'], image['width'])
        super().process(data_batch, data_samples)

    @staticmethod
    def _cut_to(pred: dict, height: int, width: int) -> None:
        """Cut ``pred`` (the metric's own dict; its tensors are the model's) to the size."""
        if 'masks' in pred and tuple(pred['masks'].shape[-2:]) != (height, width):
            pred['masks'] = pred['masks'][..., :height, :width]
        if 'bboxes' in pred:
            bboxes = pred['bboxes'].clone()
            bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, width)
            bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, height)
            pred['bboxes'] = bboxes
