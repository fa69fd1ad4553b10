"""CMT's attention alone, stage by stage: the dense bias against the low-rank one, per query split.

    python tools/analysis_tools/attention_benchmark.py --arch s --size 1280 800 --batch 2

For each stage of the arch at the given input size, random queries, keys and values of the
stage's shapes attend with the stage's position bias resized from a random learned one, in the
two forms ``CMTStage.resized_position_bias`` can give (a dense bias, and the ``LowRankBias`` it
uses above the learned key grid), for each query split (``--groups``; ``auto`` is what
``biased_attention`` chooses in training). Each row: the forward, and the forward and backward
(gradients of q, k, v and the learned bias, through its resize) in ms, the median of repeated
runs timed on the device's clock (``cmt_mm/utils/benchmark.py``), and the largest difference of
the output from the dense, unsplit one's.
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
    parser.add_argument('--arch', default='s', help="CMT arch: ti, xs, s or b (default: s)")
    parser.add_argument('--size', type=int, nargs=2, default=(1280, 800), metavar=('W', 'H'),
                        help='input size (default: 1280 800)')
    parser.add_argument('--batch', type=int, default=2, help='images (default: 2)')
    parser.add_argument('--dtype', default='bfloat16',
                        choices=['float32', 'bfloat16', 'float16'])
    parser.add_argument('--groups', nargs='+', default=['1', 'auto'],
                        help='query splits to time: numbers and/or auto (default: 1 auto)')
    parser.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--min-repeat-time', type=float, default=0.2,
                        help='seconds each timed run lasts at least (default: 0.2)')
    return parser.parse_args(argv)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def stage_shapes(arch: str, width: int, height: int):
    """Per stage: (heads, head dims, query grid, key grid, learned bias shape) as CMT runs them
    for a ``width`` x ``height`` input: the model's own stem and patch embedding convolutions
    give the grids, run on the meta device."""
    import torch

    from cmt_mm.models import CMT
    from cmt_mm.models.backbones.cmt import MIN_INPUT_SIZE

    if arch not in CMT.arch_zoo:
        raise SystemExit(f'unknown CMT arch {arch!r}; choose one of {sorted(CMT.arch_zoo)}')
    if min(width, height) < MIN_INPUT_SIZE:
        raise SystemExit(f'{width}x{height} is too small for CMT (at least {MIN_INPUT_SIZE}x'
                         f'{MIN_INPUT_SIZE})')
    model = CMT(arch).to('meta').eval()
    shapes = []
    with torch.no_grad():
        x = model.stem(torch.empty(1, 3, height, width, device='meta'))
        for stage in model.stages:
            # The embedding's convolution sets the grid (its norm does not run on meta).
            x = stage.patch_embed.projection(x)
            query_hw = tuple(x.shape[2:])
            attention = stage.blocks[0].attn
            shapes.append((attention.num_heads, stage.head_dims, query_hw,
                           attention.key_grid(query_hw), tuple(stage.position_bias.shape)))
    return shapes


def main(argv=None):
    args = parse_args(argv)
    import torch

    from cmt_mm.models.backbones.biased_attention import biased_attention, query_groups
    from cmt_mm.models.backbones.position_bias import (bias_in_dtype, low_rank_position_bias,
                                                       resize_position_bias)
    from cmt_mm.utils.benchmark import DTYPES, markdown_row, markdown_table, time_steps

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    shapes = stage_shapes(args.arch, *args.size)
    print(f'CMT-{args.arch.upper()} attention at {args.size[0]}x{args.size[1]}, batch '
          f'{args.batch}, {args.dtype}, {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    # Each row is printed as soon as it is measured: a run cut short keeps what it measured.
    print(markdown_table(['stage', 'queries', 'keys', 'heads', 'bias', 'query groups',
                          'forward ms', 'forward + backward ms', 'max |out - dense|'], []),
          flush=True)
    for stage, (heads, dims, query_hw, key_hw, bias_shape) in enumerate(shapes):
        torch.manual_seed(stage)
        num_queries, num_keys = query_hw[0] * query_hw[1], key_hw[0] * key_hw[1]
        q, k, v = (torch.randn(args.batch, heads, n, dims, device=device, dtype=dtype,
                               requires_grad=True) for n in (num_queries, num_keys, num_keys))
        learned = torch.randn(bias_shape, device=device, requires_grad=True)
        grad_out = torch.randn_like(q)

        def dense():
            return bias_in_dtype(resize_position_bias(learned, query_hw, key_hw), dtype)

        def low_rank():
            return bias_in_dtype(low_rank_position_bias(learned, query_hw, key_hw), dtype)

        with torch.no_grad():
            reference = biased_attention(q, k, v, dense(), groups=1).float()
        for form, make_bias in (('dense', dense), ('low-rank', low_rank)):
            for groups in args.groups:
                split = query_groups(q, k, low_rank=form == 'low-rank') \
                    if groups == 'auto' else int(groups)
                if num_queries % split:
                    continue

                def forward(make_bias=make_bias, split=split):
                    with torch.no_grad():
                        return biased_attention(q, k, v, make_bias(), groups=split)

                def forward_backward(make_bias=make_bias, split=split):
                    out = biased_attention(q, k, v, make_bias(), groups=split)
                    torch.autograd.backward(out, grad_out)

                difference = (forward().float() - reference).abs().max().item()
                timings = [time_steps(step, device, args.warmup, args.repeats,
                                      args.min_repeat_time).median * 1e3
                           for step in (forward, forward_backward)]
                row = [str(stage + 1), f'{num_queries:,}', f'{num_keys:,}', str(heads), form,
                       f'{split}' + (' (auto)' if groups == 'auto' else ''),
                       f'{timings[0]:.3f}', f'{timings[1]:.3f}', f'{difference:.2g}']
                print(markdown_row(row), flush=True)


if __name__ == '__main__':
    main()
