"""Speed and memory of one classification or detection config on synthetic inputs.

    python tools/analysis_tools/benchmark.py configs/cmt/cmt-s_8xb128_in1k.py
    python tools/analysis_tools/benchmark.py configs/mask_rcnn_cmt_s_1x_coco.py --with-cp
    python tools/analysis_tools/benchmark.py mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py

Classifiers: inference throughput and latency at the config's test crop size for each batch size.
Detectors: inference (``test_step``) at 1280x800 and a training step (batch 2, AdamW). Each in
float32 and AMP (bfloat16, float16), with peak memory and the achieved TFLOP/s against a
``torch.matmul`` measured in the same dtype. What a step contains and how it is timed:
``cmt_mm/utils/benchmark.py``. No dataset or checkpoint is read.
"""
import argparse
import importlib.util
import json
import os.path as osp
import shlex
import sys

# Runs from a source checkout without installing cmt_mm.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if importlib.util.find_spec('cmt_mm') is None:
    sys.path.insert(0, REPO)


def parse_args(argv=None):
    from mmengine.config import DictAction

    from cmt_mm.utils.benchmark import add_settings_args

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file, or mmdet::PATH / mmpretrain::PATH')
    add_settings_args(parser)
    parser.add_argument('--json-out', help='write the results and the environment here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, e.g. model.backbone.arch=ti')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from cmt_mm.utils.benchmark import (ConfigBenchmark, cells_table, environment,
                                        measure_matmul_peaks, settings_from_args)

    settings = settings_from_args(args)
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    peaks = measure_matmul_peaks(settings)
    result = ConfigBenchmark(args.config, settings, args.cfg_options, peaks).run()
    macs = result['macs_per_image']
    print(f'\n{args.config}: input {result["input_hw"][0]}x{result["input_hw"][1]}, '
          f'{result["params"] / 1e6:.2f} M parameters'
          + ('' if macs is None else f', {macs / 1e9:.2f} GMACs = {2 * macs / 1e9:.2f} GFLOPs '
             'per image (forward)'))
    print(cells_table(result))
    if args.json_out:
        command = ['python', 'tools/analysis_tools/benchmark.py',
                   *(sys.argv[1:] if argv is None else argv)]
        report = dict(command=shlex.join(command),
                      environment=environment(torch.device(settings.device)),
                      settings=vars(settings), matmul_peak_tflops=peaks, results=[result])
        with open(args.json_out, 'w') as f:
            json.dump(report, f, indent=1)


if __name__ == '__main__':
    main()
