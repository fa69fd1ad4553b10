"""Drawing detections on images that were padded before the model saw them."""
from typing import Optional

import numpy as np
from mmdet.structures import DetDataSample
from mmdet.visualization import DetLocalVisualizer as MMDetLocalVisualizer

from cmt_mm.registry import VISUALIZERS


@VISUALIZERS.register_module()
class DetLocalVisualizer(MMDetLocalVisualizer):
    """mmdet's ``DetLocalVisualizer``, drawing on the image as the model saw it.

    ``cmt_mm.SafeLoadImageFromFile`` pads an image far longer than wide (2000 x 4 pixels) at
    the bottom or right, and the sample's ``ori_shape``, its masks and the predicted ones have
    the padded size; mmdet's visualization hook reads the file again, and mmdet fails to draw
    masks of another size than the image. The image is padded the same way first.
    """

    def add_datasample(self, name: str, image: np.ndarray,
                       data_sample: Optional[DetDataSample] = None, *args, **kwargs) -> None:
        if data_sample is not None and 'ori_shape' in data_sample:
            height, width = data_sample.ori_shape
            if image.shape[:2] != (height, width) and image.shape[0] <= height \
                    and image.shape[1] <= width:
                padded = np.zeros((height, width, *image.shape[2:]), image.dtype)
                padded[:image.shape[0], :image.shape[1]] = image
                image = padded
        super().add_datasample(name, image, data_sample, *args, **kwargs)
