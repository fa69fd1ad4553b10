"""Layer-wise learning-rate decay for classifiers and detectors with a CMT backbone."""
from functools import partial
from typing import Callable, List, Optional

import torch.nn as nn
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

from cmt_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-decay constructor, also for models without ``get_layer_depth``.

    mmpretrain's version needs ``model.get_layer_depth`` (classifiers have it, mmdet detectors do
    not) and mmdet's supports ConvNeXt only. Here the layer depth comes from the model when it has
    one, else from ``model.backbone.get_layer_depth(name, 'backbone.')``; parameters outside the
    backbone (neck, heads) get the top layer, i.e. the full learning rate.

    Example::

        optim_wrapper = dict(
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='cmt_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.9))
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        if get_layer_depth is None and prefix == '':
            get_layer_depth = self.layer_depth_of(module)
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)

    @staticmethod
    def layer_depth_of(model: nn.Module) -> Callable:
        if hasattr(model, 'get_layer_depth'):
            return model.get_layer_depth
        backbone = getattr(model, 'backbone', None)
        if hasattr(backbone, 'get_layer_depth'):
            return partial(backbone.get_layer_depth, prefix='backbone.')
        raise TypeError(f'layer-wise lr decay needs {type(model).__name__} or its backbone to '
                        'have get_layer_depth(param_name, prefix); CMT and mmpretrain '
                        'backbones do')
