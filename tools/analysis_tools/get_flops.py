"""Parameters and FLOPs of a classification or detection config at a fixed input size.

    python tools/analysis_tools/get_flops.py configs/cmt/cmt-s_8xb128_in1k.py --shape 224
    python tools/analysis_tools/get_flops.py configs/mask_rcnn_cmt_s_1x_coco.py --shape 1280 800

FLOPs are multiply-adds (as in the CMT paper), printed without and with the attention matrix
products; BatchNorm is taken as folded into the convolutions. No dataset is needed.
"""
import argparse
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

from cmt_mm.utils.complexity import model_complexity


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Count parameters and FLOPs of a config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size: S for SxS, or W H (as mmdet: e.g. 1280 800)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.arch=ti')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes one or two numbers')
    return args


def tensor_forward(model, height, width):
    """The model's raw forward on a (1, 3, H, W) input, with whatever metadata it needs."""
    if hasattr(model, 'roi_head') or hasattr(model, 'bbox_head'):  # an mmdet detector
        from mmdet.structures import DetDataSample
        sample = DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width),
            batch_input_shape=(height, width), scale_factor=(1., 1.)))
        return lambda inputs: model._forward(inputs, [sample])
    return lambda inputs: model(inputs, mode='tensor')


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    width, height = args.shape * 2 if len(args.shape) == 1 else args.shape
    inputs = torch.randn(1, 3, height, width)
    result = model_complexity(model, tensor_forward(model, height, width), inputs)
    print(f'Config: {args.config}')
    print(f'Input shape: (1, 3, {height}, {width})')
    print(f'Params: {result.params / 1e6:.2f} M ({result.params:,})')
    print(f'FLOPs without attention matrix products: {result.flops / 1e9:.3f} G')
    print(f'FLOPs with attention matrix products: {result.flops_with_attention / 1e9:.3f} G')


if __name__ == '__main__':
    sys.exit(main())
