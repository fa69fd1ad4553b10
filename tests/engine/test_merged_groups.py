"""MergedGroupsOptimWrapperConstructor: mmengine's parameter options, in few groups."""
import copy
import logging

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch.profiler import profile

from cmt_mm.engine.optimizers import merge_param_groups

# '6.': the Linear layer
PARAMWISE = dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'6.': dict(lr_mult=0.1)})


def small_model(conv_bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=conv_bias), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, bias=conv_bias), nn.BatchNorm2d(8), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


def optimizer(model, merged, **adamw_options):
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05, **adamw_options),
               paramwise_cfg=PARAMWISE)
    if merged:
        cfg['constructor'] = 'cmt_mm.MergedGroupsOptimWrapperConstructor'
    init_default_scope('mmengine')
    return build_optim_wrapper(model, cfg).optimizer


def options_by_parameter(opt):
    return {id(p): {k: v for k, v in group.items() if k != 'params'}
            for group in opt.param_groups for p in group['params']}


def test_merge_keeps_every_parameter_with_its_options():
    groups = [dict(params=['a'], lr=1.), dict(params=['b'], lr=2.), dict(params=['c'], lr=1.),
              dict(params=['d'], lr=1., weight_decay=0.)]
    assert merge_param_groups(groups) == [
        dict(params=['a', 'c'], lr=1.), dict(params=['b'], lr=2.),
        dict(params=['d'], lr=1., weight_decay=0.)]


def test_cifar_cmt_s_options_in_three_groups():
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile('configs/cifar10_scratch/cmt-s_1xb1024_cifar10-64px.py')
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    merged = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    cfg.optim_wrapper.pop('constructor')
    per_parameter = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    assert len(per_parameter.param_groups) == len(list(model.parameters())) == 776
    assert len(merged.param_groups) == 3  # decayed, not decayed, position biases
    assert options_by_parameter(merged) == options_by_parameter(per_parameter)


def test_training_is_the_same_and_the_step_launches_far_fewer_kernels():
    models = {merged: small_model() for merged in (False, True)}
    opts = {merged: optimizer(model, merged, foreach=True) for merged, model in models.items()}
    assert len(opts[True].param_groups) == 3 < len(opts[False].param_groups) == 10
    x = torch.randn(6, 3, 8, 8)
    ops = {}
    for merged, model in models.items():
        for _ in range(3):
            opts[merged].zero_grad()
            model(x).square().mean().backward()
            with profile() as prof:
                opts[merged].step()
            # each multi-tensor operator: one kernel launch per group on a GPU
            ops[merged] = sum(e.count for e in prof.key_averages()
                              if e.key.startswith('aten::_foreach'))
    for a, b in zip(models[False].parameters(), models[True].parameters()):
        torch.testing.assert_close(a, b)
    assert ops[True] * 3 < ops[False]


def test_fused_adamw_of_the_schedules_trains_like_the_multi_tensor_one():
    for schedule in ('cifar10_scratch_adamw', 'detection_adamw_1x', 'transfer_adamw_100e',
                     'imagenet_cmt_300e'):
        cfg = Config.fromfile(f'configs/_base_/schedules/{schedule}.py')
        assert cfg.optim_wrapper.optimizer.fused is True, schedule
    # A bias before a BatchNorm gets a gradient of rounding noise, which Adam scales up to
    # full steps of any sign: the two implementations' rounding would decide them.
    models = {fused: small_model(conv_bias=False) for fused in (False, True)}
    opts = {False: optimizer(models[False], merged=True, foreach=True),
            True: optimizer(models[True], merged=True, fused=True)}
    x = torch.randn(6, 3, 8, 8)
    for fused, model in models.items():
        for _ in range(3):
            opts[fused].zero_grad()
            model(x).square().mean().backward()
            opts[fused].step()
    for a, b in zip(models[False].parameters(), models[True].parameters()):
        torch.testing.assert_close(a, b)


def test_one_log_line_per_merged_group_not_per_parameter():
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('merged_groups_test', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        optimizer(small_model(), merged=True)
    finally:
        logger.removeHandler(handler)
    lines = [record.getMessage() for record in records]
    assert not any(line.startswith('paramwise_options') for line in lines)
    first = lines.index('10 parameter groups merged into 3 by their options:')
    assert lines[first + 1:first + 4] == [
        '  2 tensors: lr=0.01, weight_decay=0.05',  # the conv weights
        '  6 tensors: lr=0.01, weight_decay=0.0',  # biases and norms
        '  2 tensors: lr=0.001, weight_decay=0.05, lr_mult=0.1']  # the Linear ('6.')
