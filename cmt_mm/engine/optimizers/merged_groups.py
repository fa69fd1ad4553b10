"""Parameter groups merged by their options, so that multi-tensor optimizers batch their kernels."""
import logging
from typing import List

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from cmt_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """Groups with equal options (all keys but ``params``) as one, in first-seen order."""
    merged: List[dict] = []
    for group in groups:
        options = {key: value for key, value in group.items() if key != 'params'}
        for target in merged:
            if {key: value for key, value in target.items() if key != 'params'} == options:
                target['params'].extend(group['params'])
                break
        else:
            merged.append(dict(options, params=list(group['params'])))
    return merged


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, with the parameter groups of equal options merged.

    Given a ``paramwise_cfg``, mmengine puts every parameter in a group of its own (the CIFAR-10
    CMT-S classifier: 776 groups). PyTorch's multi-tensor (``foreach``) optimizers batch
    parameters within a group only, so AdamW then launches each of its kernels once per
    parameter: 6,439 multi-tensor operations per step for that classifier. Merged, the
    parameters with equal options (learning rate, weight decay, ...) share a group and each
    operation covers all of them: 3 groups, 25 operations. The training is the same.

    mmengine logs every parameter's options (over 1,500 lines for CMT-S); this logs one line per
    merged group instead.

    Checkpoints keep the optimizer's groups: one saved with per-parameter groups resumes with
    ``constructor='DefaultOptimWrapperConstructor'`` (tools/train.py says so).

    Example::

        optim_wrapper = dict(
            constructor='cmt_mm.MergedGroupsOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        if prefix != '':  # mmengine's recursion into submodules
            super().add_params(params, module, prefix, **kwargs)
            return
        logger = MMLogger.get_current_instance()
        logger.addFilter(_drop_per_parameter_lines)
        try:
            super().add_params(params, module, prefix, **kwargs)
        finally:
            logger.removeFilter(_drop_per_parameter_lines)
        merged = merge_param_groups(params)
        print_log(f'{len(params)} parameter groups merged into {len(merged)} by their options:',
                  logger='current')
        for group in merged:
            options = dict(dict(lr=self.base_lr, weight_decay=self.base_wd), **group)
            options.pop('params')
            print_log(f'  {len(group["params"])} tensors: '
                      + ', '.join(f'{key}={value}' for key, value in options.items()),
                      logger='current')
        params[:] = merged


def _drop_per_parameter_lines(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith('paramwise_options -- ')
