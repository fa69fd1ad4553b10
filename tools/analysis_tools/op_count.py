"""ATen operators of one training forward and backward of each config's backbone and neck.

    python tools/analysis_tools/op_count.py configs/retinanet_cmt_s_1x_coco.py \
        mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py

A detector's training step on a fast GPU waits in part on the host launching kernels (a quarter of
RetinaNet CMT-S's, docs/benchmarks.md run 6), and that part follows the operators it dispatches.
This counts them on the CPU (``cmt_mm/utils/op_count.py`` says how little the counts depend on
the device; CMT's one cast of its weights per stage, which runs on CUDA only, runs here too),
under autocast as AMP training runs: the backbone and neck (the parts in which
detectors with the same heads differ) forward, then backward from the sum of their outputs,
after one warm-up step, with gradients reset as an optimizer wrapper resets them. It prints a
table (operators without views, of them autocast's casts, views) and each model's most called
operators.
"""
import argparse
import importlib.util
import os.path as osp
import sys

# Runs from a source checkout without installing cmt_mm.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if importlib.util.find_spec('cmt_mm') is None:
    sys.path.insert(0, REPO)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+', help='config files, or mmdet:: / mmpretrain:: '
                        'paths into those packages\' configs')
    parser.add_argument('--size', type=int, nargs=2, default=(320, 320), metavar=('W', 'H'),
                        help='input size (default: 320 320)')
    parser.add_argument('--batch', type=int, default=2, help='images (default: 2)')
    parser.add_argument('--dtype', default='bfloat16',
                        choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--top', type=int, default=10,
                        help='most called operators listed per model (default: 10)')
    return parser.parse_args(argv)


def training_pass(model, images):
    """Backbone (and neck) forward under the current autocast, backward from their sum."""
    outs = model.backbone(images)
    if getattr(model, 'neck', None) is not None:
        outs = model.neck(outs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs, )
    sum(out.float().sum() for out in outs).backward()


def main(argv=None):
    args = parse_args(argv)
    import torch

    from cmt_mm.models.backbones.weight_cast import cast_weights_once_on
    from cmt_mm.utils.benchmark import (DTYPES, amp_autocast, build_model, load_config,
                                        markdown_table)
    from cmt_mm.utils.op_count import count_ops

    cpu, dtype = torch.device('cpu'), DTYPES[args.dtype]
    images = torch.randn(args.batch, 3, args.size[1], args.size[0])
    counts = {}
    for path in args.configs:
        model = build_model(load_config(path), cpu)
        model.train()  # mmdet's Swin returns None from train(): not chained

        def step():
            with amp_autocast(cpu, dtype), cast_weights_once_on('cpu'):
                training_pass(model, images)

        step()  # first-call work (caches, lazy buffers) is not per step
        model.zero_grad(set_to_none=True)
        counts[path] = count_ops(step)
    print(f'ATen operators of one backbone + neck training forward and backward: '
          f'{args.size[0]}x{args.size[1]}, batch {args.batch}, {args.dtype}')
    first = counts[args.configs[0]].total
    rows = [[path, f'{count.total:,}', f'{count.ops["_to_copy"]:,}', f'{count.views:,}',
             f'{count.total / first:.2f}x'] for path, count in counts.items()]
    print(markdown_table(['config', 'operators (no views)', 'of them casts (_to_copy)', 'views',
                          'vs the first'], rows))
    for path, count in counts.items():
        print(f'\n{path}: most called')
        print(markdown_table(['operator', 'calls'], [[name, f'{calls:,}'] for name, calls
                                                     in count.ops.most_common(args.top)]))


if __name__ == '__main__':
    main()
