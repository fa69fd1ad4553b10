"""Train detectors from scratch on COCO128 with one shared budget and tabulate their COCO mAP.

    python tools/analysis_tools/coco128_compare.py --data-root data/coco128 --work-dir work_dirs/coco128

COCO128 is 128 real COCO train2017 images; its train and val annotation files list the same
images, so the figures measure how well each detector fits them in the budget, not
generalisation. Every run gets the same image scale, epochs, batch, warm-up and schedule
through ``--cfg-options`` (printed with each command), in float32 unless ``--amp`` asks for
fp16 AMP (mmcv 2.1's RoIAlign and focal loss have no bfloat16 kernels). The configs in configs/coco128/
set the optimizer (AdamW 2e-4, gradients clipped at 35, for all) and switch pretraining off. The first run's final checkpoint is evaluated
again with tools/test.py, to show that it reproduces the mAP printed at the end of training.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = {
    'retinanet_cmt-s': 'configs/coco128/retinanet_cmt-s_scratch.py',
    'retinanet_r50': 'configs/coco128/retinanet_r50_scratch.py',
    'retinanet_swin-t': 'configs/coco128/retinanet_swin-t_scratch.py',
    'mask_rcnn_cmt-s': 'configs/coco128/mask_rcnn_cmt-s_scratch.py',
    'mask_rcnn_r50': 'configs/coco128/mask_rcnn_r50_scratch.py',
    'mask_rcnn_swin-t': 'configs/coco128/mask_rcnn_swin-t_scratch.py',
}
METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')


def budget_options(data_root: str, epochs: int, batch_size: int, workers: int,
                   scale: tuple) -> list:
    """--cfg-options giving every run the same data and budget."""
    ann = osp.join(data_root, 'annotations', 'instances_val2017.json')
    scale = f'({scale[0]},{scale[1]})'
    options = [f'train_dataloader.dataset.pipeline.2.scale={scale}',  # Resize
               f'val_dataloader.dataset.pipeline.1.scale={scale}',
               f'test_dataloader.dataset.pipeline.1.scale={scale}',
               f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
               f'train_dataloader.batch_size={batch_size}',
               f'train_dataloader.num_workers={workers}',
               'param_scheduler.0.end=100',
               f'param_scheduler.1.end={epochs}',
               f'param_scheduler.1.milestones=[{epochs * 3 // 4},{epochs * 11 // 12}]',
               f'default_hooks.checkpoint.interval={epochs}',
               'default_hooks.logger.interval=10']
    for split in ('train', 'val', 'test'):
        options.append(f'{split}_dataloader.dataset.data_root={data_root}')
    for split in ('val', 'test'):
        options += [f'{split}_dataloader.dataset.data_prefix.img=train2017/',
                    f'{split}_evaluator.ann_file={ann}']
    return options


def final_metrics(work_dir: str) -> dict:
    """The last validation metrics in a work dir's mmengine scalar logs."""
    metrics = {}
    for log in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if 'coco/bbox_mAP' in record:
                metrics = record
    return metrics


def start(name: str, config: str, options: list, args) -> tuple:
    work_dir = osp.join(args.work_dir, name)
    os.makedirs(work_dir, exist_ok=True)
    cmd = [sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
           *(['--amp'] if args.amp else []), '--cfg-options', *options]
    print('$ ' + ' '.join(cmd[1:]), flush=True)
    log = open(osp.join(work_dir, 'train.log'), 'w')
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), time.time()


def reevaluate(name: str, config: str, options: list, args) -> dict:
    work_dir = osp.join(args.work_dir, name)
    checkpoint = osp.join(work_dir, f'epoch_{args.epochs}.pth')
    cmd = [sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
           osp.join(work_dir, 'test'), '--cfg-options', *options]
    print('$ ' + ' '.join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in re.findall(r'(coco/\w+): (-?[\d.]+)', out)}


def table(results: dict) -> str:
    lines = ['| run | ' + ' | '.join(m.split('/')[1] for m in METRICS) + ' | train wall (s) |',
             '|---' * (len(METRICS) + 2) + '|']
    for name, (metrics, seconds) in results.items():
        cells = [f'{metrics[m]:.3f}' if m in metrics else '-' for m in METRICS]
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {seconds:.0f} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', required=True, help='COCO128 folder')
    parser.add_argument('--work-dir', default='work_dirs/coco128')
    parser.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS))
    parser.add_argument('--epochs', type=int, default=24)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--parallel', type=int, default=3, help='runs sharing the GPU at once')
    parser.add_argument('--scale', type=int, nargs=2, default=(1333, 800),
                        help='the longer and shorter side images are resized to')
    parser.add_argument('--amp', action='store_true', help='train with fp16 AMP')
    parser.add_argument('--reevaluate', action='store_true',
                        help='evaluate the first run\'s checkpoint again with tools/test.py')
    args = parser.parse_args(argv)
    data_root = osp.abspath(args.data_root) + '/'
    options = budget_options(data_root, args.epochs, args.batch_size, args.workers,
                             args.scale)

    pending, running, results = list(args.runs), {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            running[name] = start(name, RUNS[name], options, args)
        time.sleep(5)
        for name, (proc, began) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    print(f'{name} failed (exit {proc.returncode}); see its train.log')
                results[name] = (final_metrics(osp.join(args.work_dir, name)),
                                 time.time() - began)
                print(f'{name}: {results[name]}', flush=True)
    report = table({name: results[name] for name in args.runs})
    if args.reevaluate:
        name = args.runs[0]
        again = reevaluate(name, RUNS[name], options, args)
        report += (f'\n\nRe-evaluation of {name}/epoch_{args.epochs}.pth with tools/test.py: '
                   + ', '.join(f'{k} {v:.3f}' for k, v in again.items() if k in METRICS))
    print(report)
    Path(args.work_dir, 'results.md').write_text(report + '\n')


if __name__ == '__main__':
    main()
