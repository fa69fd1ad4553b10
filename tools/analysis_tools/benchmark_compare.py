"""CMT beside Swin-T, DeiT-S, ResNet-50 and ConvNeXt-T on one GPU, in one command and one report.

    python tools/analysis_tools/benchmark_compare.py --work-dir work_dirs/benchmark

Classification (inference at each model's test crop size): CMT-Ti/XS/S/B, and mmpretrain's own
Swin-T, DeiT-S, ResNet-50 and ConvNeXt-T configs. Detection at 1280x800 (inference, batch 1;
training step, batch 2): RetinaNet and Mask R-CNN with CMT-S, ResNet-50 (mmdet's configs) and
Swin-T (mmdet's configs), plus Mask R-CNN CMT-S training with activation checkpointing
(``with_cp``) for its memory. All in float32, bfloat16 and float16 (AMP); ratios against Swin-T
in the same dtype. Each measurement is ``cmt_mm/utils/benchmark.py``'s, as in
``tools/analysis_tools/benchmark.py``.

Writes ``comparison.md`` (tables, GPU, versions, the command) and ``comparison.json`` (every
measurement) to the work dir, after each model, so an interrupted run keeps what it measured.
About 5 minutes on an H100 with the defaults.

``--smoke`` checks the set-up on a CPU in a few minutes: batch 1, one timed step, float32 and
bfloat16, small detection inputs and a subset of the models.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import shlex
import sys
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

# Runs from a source checkout without installing cmt_mm.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if importlib.util.find_spec('cmt_mm') is None:
    sys.path.insert(0, REPO)


@dataclass(frozen=True)
class Entry:
    config: str
    baseline: str  # the entry its ratios are taken against
    with_cp: Optional[bool] = None
    modes: Tuple[str, ...] = ('inference', 'train')


def classifier(config: str) -> Entry:
    """The comparison times classifiers in inference (its tables have no training columns)."""
    return Entry(config, 'swin-t', modes=('inference', ))


ENTRIES: Dict[str, Entry] = {
    'cmt-ti': classifier('configs/cmt/cmt-ti_8xb128_in1k.py'),
    'cmt-xs': classifier('configs/cmt/cmt-xs_8xb128_in1k.py'),
    'cmt-s': classifier('configs/cmt/cmt-s_8xb128_in1k.py'),
    'cmt-b': classifier('configs/cmt/cmt-b_8xb128_in1k.py'),
    'swin-t': classifier('mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'),
    'deit-s': classifier('mmpretrain::deit/deit-small_4xb256_in1k.py'),
    'resnet-50': classifier('mmpretrain::resnet/resnet50_8xb32_in1k.py'),
    'convnext-t': classifier('mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'),
    'retinanet_cmt-s': Entry('configs/retinanet_cmt_s_1x_coco.py', 'retinanet_swin-t'),
    'retinanet_r50': Entry('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', 'retinanet_swin-t'),
    'retinanet_swin-t': Entry('mmdet::swin/retinanet_swin-t-p4-w7_fpn_1x_coco.py',
                              'retinanet_swin-t'),
    'mask_rcnn_cmt-s': Entry('configs/mask_rcnn_cmt_s_1x_coco.py', 'mask_rcnn_swin-t'),
    'mask_rcnn_r50': Entry('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', 'mask_rcnn_swin-t'),
    'mask_rcnn_swin-t': Entry('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
                              'mask_rcnn_swin-t'),
    # Activation checkpointing trades recomputation for memory: its own row, training only.
    'mask_rcnn_cmt-s_with-cp': Entry('configs/mask_rcnn_cmt_s_1x_coco.py', 'mask_rcnn_cmt-s',
                                     with_cp=True, modes=('train', )),
}
SMOKE_MODELS = ('cmt-ti', 'swin-t', 'retinanet_cmt-s', 'retinanet_swin-t')


def smoke_settings():
    from cmt_mm.utils.benchmark import Settings

    return Settings(device='cpu', dtypes=('float32', 'bfloat16'), batch_sizes=(1, ),
                    det_size=(128, 128), warmup=1, repeats=1, min_repeat_time=0.)


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def find_cell(result: Optional[dict], mode: str, dtype: str,
              batch: Optional[int] = None) -> Optional[dict]:
    for cell in (result or {}).get('cells', []):
        if cell['mode'] == mode and cell['dtype'] == dtype and batch in (None, cell['batch_size']):
            return cell
    return None


def _ok(cell: Optional[dict]) -> bool:
    return cell is not None and cell['status'] == 'ok'


def _value(cell: Optional[dict], key: str, digits: int = 1) -> str:
    if cell is None:
        return '-'
    if cell['status'] != 'ok':
        return cell['status']
    value = cell[key]
    return '-' if value is None else f'{value:,.{digits}f}'


def _ratio(cell: Optional[dict], reference: Optional[dict], key: str,
           inverse: bool = False) -> str:
    if not (_ok(cell) and _ok(reference)):
        return '-'
    ratio = reference[key] / cell[key] if inverse else cell[key] / reference[key]
    return f'{ratio:.2f}x'


def _model_columns(result: dict) -> List[str]:
    if 'error' in result:
        return [f'error: {result["error"]}', '-', '-']
    macs = result['macs_per_image']
    height, width = result['input_hw']
    return [f'{height}x{width}' if height != width else str(height),
            f'{result["params"] / 1e6:.1f}', '-' if macs is None else f'{macs / 1e9:.2f}']


def classification_tables(results: Dict[str, dict], settings) -> str:
    from cmt_mm.utils.benchmark import markdown_table

    names = [n for n, r in results.items() if r.get('task') == 'classification']
    if not names:
        return ''
    largest, smallest = max(settings.batch_sizes), min(settings.batch_sizes)
    sections = []
    for dtype in settings.dtypes:
        header = ['model', 'input', 'params (M)', 'GMACs', f'latency b{smallest} (ms)']
        header += [f'images/s b{b}' for b in settings.batch_sizes]
        header += [f'vs Swin-T b{largest}', f'peak MiB b{largest}', f'TFLOP/s b{largest}',
                   '% of matmul peak']
        rows = []
        for name in names:
            result = results[name]
            cells = {b: find_cell(result, 'inference', dtype, b) for b in settings.batch_sizes}
            reference = find_cell(results.get(ENTRIES[name].baseline), 'inference', dtype,
                                  largest)
            top = cells[largest]
            fraction = top['fraction_of_matmul_peak'] if _ok(top) else None
            rows.append([name, *_model_columns(result), _value(cells[smallest], 'median_ms', 2),
                         *[_value(cells[b], 'images_per_s') for b in settings.batch_sizes],
                         _ratio(top, reference, 'images_per_s'),
                         _value(top, 'peak_memory_mib', 0), _value(top, 'tflops', 2),
                         '-' if fraction is None else f'{100 * fraction:.0f}%'])
        sections.append(f'### {dtype}\n\n' + markdown_table(header, rows))
    return '\n\n'.join(sections)


def detection_tables(results: Dict[str, dict], settings) -> str:
    from cmt_mm.utils.benchmark import markdown_table

    names = [n for n, r in results.items()
             if r.get('task') == 'detection' and ENTRIES[n].with_cp is None]
    if not names:
        return ''
    sections = []
    for dtype in settings.dtypes:
        header = ['model', 'input', 'params (M)', 'GMACs', 'inference images/s',
                  'vs Swin-T', 'inference peak MiB', 'train step (ms)', 'vs Swin-T (speed)',
                  'train peak MiB', 'train TFLOP/s']
        rows = []
        for name in names:
            result, baseline = results[name], results.get(ENTRIES[name].baseline)
            infer, train = find_cell(result, 'inference', dtype), find_cell(result, 'train', dtype)
            rows.append([name, *_model_columns(result), _value(infer, 'images_per_s', 2),
                         _ratio(infer, find_cell(baseline, 'inference', dtype), 'images_per_s'),
                         _value(infer, 'peak_memory_mib', 0), _value(train, 'median_ms'),
                         _ratio(train, find_cell(baseline, 'train', dtype), 'median_ms',
                                inverse=True),
                         _value(train, 'peak_memory_mib', 0), _value(train, 'tflops', 2)])
        sections.append(f'### {dtype}\n\n' + markdown_table(header, rows))
    return '\n\n'.join(sections)


def checkpointing_table(results: Dict[str, dict], settings) -> str:
    from cmt_mm.utils.benchmark import markdown_table

    rows = []
    for name, result in results.items():
        entry = ENTRIES[name]
        if not entry.with_cp:
            continue
        for dtype in settings.dtypes:
            plain = find_cell(results.get(entry.baseline), 'train', dtype)
            checkpointed = find_cell(result, 'train', dtype)
            change = '-'
            if _ok(plain) and _ok(checkpointed) and plain['peak_memory_mib']:
                change = f'{checkpointed["peak_memory_mib"] / plain["peak_memory_mib"] - 1:+.0%}'
            rows.append([entry.baseline, dtype, _value(plain, 'peak_memory_mib', 0),
                         _value(checkpointed, 'peak_memory_mib', 0), change,
                         _value(plain, 'median_ms'), _value(checkpointed, 'median_ms')])
    if not rows:
        return ''
    header = ['model', 'dtype', 'train peak MiB', 'with with_cp', 'memory change',
              'train step (ms)', 'with with_cp']
    return markdown_table(header, rows)


def report(results: Dict[str, dict], settings, env: dict, peaks: dict, command: str,
           seconds: float) -> str:
    versions = ', '.join(f'{name} {env[name]}' for name in ('mmcv', 'mmdet', 'mmpretrain',
                                                             'mmengine'))
    lines = [
        '# CMT speed and memory beside Swin-T, DeiT-S, ResNet-50 and ConvNeXt-T', '',
        f'Command: `{command}`', '',
        f'Device: {env["device"]}; Python {env["python"]}, torch {env["torch"]} '
        f'(CUDA {env["cuda"]}, cuDNN {env["cudnn"]}), {versions}.', '',
        f'Timing: {settings.warmup} warm-up steps, then the median of {settings.repeats} runs '
        f'of at least {settings.min_repeat_time} s; cudnn.benchmark '
        f'{"on" if env["cudnn_benchmark"] else "off"}; TF32 for matmuls '
        f'{"on" if env["tf32_matmul"] else "off"}, for convolutions '
        f'{"on" if env["tf32_cudnn"] else "off"}; channels_last {settings.channels_last}, '
        f'torch.compile {settings.compile_mode}, BatchNorm folded {settings.fuse_bn}. '
        f'Total wall time {seconds:.0f} s.', '',
        'Matmul peak (TFLOP/s): ' + ', '.join(f'{d} {p:.1f}' for d, p in peaks.items()) + '.',
        '',
        'GMACs: multiply-accumulates of one image\'s tensor forward (FLOPs = 2 x MACs), '
        'attention matrix products included. TFLOP/s: the FLOPs a step executes (training: 3x '
        'its forward) over its median time. "vs Swin-T": throughput, or for training step '
        'speed, relative to Swin-T in the same dtype; above 1.00x is faster.']
    sections = [
        ('Classification: inference at the native resolution', classification_tables),
        (f'Detection at {settings.det_size[0]}x{settings.det_size[1]}: inference (batch '
         f'{settings.det_infer_batch}) and training step (batch {settings.det_train_batch})',
         detection_tables),
        ('Activation checkpointing (with_cp): training memory', checkpointing_table)]
    for title, table in sections:
        body = table(results, settings)
        if body:
            lines += ['', f'## {title}', '', body]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    from cmt_mm.utils.benchmark import add_settings_args

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/benchmark',
                        help='where comparison.md and comparison.json go')
    parser.add_argument('--models', nargs='+', choices=list(ENTRIES),
                        help='a subset, in this order (default: all; with --smoke: '
                        f'{" ".join(SMOKE_MODELS)})')
    parser.add_argument('--smoke', action='store_true',
                        help='a quick CPU check of the whole run (options given override it)')
    add_settings_args(parser)
    return parser.parse_args(argv)


def entry_settings(name: str, settings):
    """The command line's settings as the entry narrows them (None: no mode left to run)."""
    entry = ENTRIES[name]
    modes = tuple(mode for mode in settings.modes if mode in entry.modes)
    with_cp = settings.with_cp if entry.with_cp is None else entry.with_cp
    return replace(settings, with_cp=with_cp, modes=modes) if modes else None


def run_entry(name: str, settings, peaks: dict, log) -> dict:
    from cmt_mm.utils.benchmark import ConfigBenchmark

    entry = ENTRIES[name]
    config = entry.config if '::' in entry.config else osp.join(REPO, entry.config)
    try:
        return ConfigBenchmark(config, settings, matmul_peaks=peaks,
                               log=lambda message: log(f'{name}: {message}')).run()
    except Exception as err:  # a model that fails to build must not cost the others
        log(f'{name}: failed: {type(err).__name__}: {err}')
        return dict(config=entry.config, error=f'{type(err).__name__}: {err}')


def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    import torch

    from cmt_mm.utils.benchmark import (environment, measure_matmul_peaks,
                                        settings_from_args)

    began = time.time()

    def log(message: str) -> None:
        print(f'[{time.time() - began:6.0f} s] {message}', flush=True)

    settings = settings_from_args(args, smoke_settings() if args.smoke else None)
    names = args.models or (SMOKE_MODELS if args.smoke else list(ENTRIES))
    torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its kernels
    command = shlex.join(['python', 'tools/analysis_tools/benchmark_compare.py',
                          *(sys.argv[1:] if argv is None else argv)])
    env = environment(torch.device(settings.device))
    peaks = measure_matmul_peaks(settings, log)
    os.makedirs(args.work_dir, exist_ok=True)
    results = {}
    for name in names:
        narrowed = entry_settings(name, settings)
        if narrowed is None:
            log(f'{name}: skipped, it has none of the modes {" ".join(settings.modes)}')
            continue
        log(f'{name}: {ENTRIES[name].config}')
        results[name] = run_entry(name, narrowed, peaks, log)
        seconds = time.time() - began
        with open(osp.join(args.work_dir, 'comparison.json'), 'w') as f:
            json.dump(dict(command=command, environment=env, settings=vars(settings),
                           matmul_peak_tflops=peaks, seconds=seconds, results=results), f,
                      indent=1)
        text = report(results, settings, env, peaks, command, seconds)
        with open(osp.join(args.work_dir, 'comparison.md'), 'w') as f:
            f.write(text)
    print(text)
    log(f'wrote {osp.join(args.work_dir, "comparison.md")}')


if __name__ == '__main__':
    main()
