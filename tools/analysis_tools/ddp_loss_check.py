"""Train the same detector on one GPU and on several, at the same total batch, and compare losses.

    python tools/analysis_tools/ddp_loss_check.py configs/retinanet_cmt_s_1x_coco.py \
        --data-root data/coco128 --gpus 2 --total-batch 8 --epochs 10

Both runs see the same global batches: the same seed gives both samplers the same
permutation, the distributed sampler deals it out rank by rank, aspect-ratio grouping and
random flips are switched off. The GPUs must be of one machine (``torchrun --standalone``).
mmengine logs rank 0's loss, averaged over the logging window, so the multi-GPU curve is
measured on half (for 2 GPUs) of each global batch and the comparison is on those window means.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from coco128_compare import budget_options  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def train(config: str, work_dir: str, gpus: int, options: list) -> None:
    launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                 f'--nproc_per_node={gpus}'] if gpus > 1 else [sys.executable])
    cmd = [*launcher, 'tools/train.py', config, '--work-dir', work_dir,
           '--launcher', 'pytorch' if gpus > 1 else 'none', '--cfg-options', *options]
    print('$ ' + ' '.join(cmd[1:]), flush=True)
    with open(osp.join(work_dir, 'train.log'), 'w') as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)


def logged(work_dir: str) -> tuple:
    """(step -> loss) of the training log, and the final validation record."""
    losses, metrics = {}, {}
    for log in Path(work_dir).glob('*/vis_data/scalars.json'):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['step']] = record['loss']
            elif 'coco/bbox_mAP' in record:
                metrics = record
    return losses, metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--data-root', required=True, help='a COCO-layout folder (COCO128)')
    parser.add_argument('--work-dir', default='work_dirs/ddp_loss_check')
    parser.add_argument('--gpus', type=int, default=2)
    parser.add_argument('--total-batch', type=int, default=8)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--scale', type=int, nargs=2, default=(800, 480))
    parser.add_argument('--cfg-options', nargs='*', default=[], help='extra, for both runs')
    args = parser.parse_args(argv)
    if args.total_batch % args.gpus:
        parser.error(f'--total-batch {args.total_batch} does not split over {args.gpus} GPUs')

    data_root = osp.abspath(args.data_root) + '/'
    same_batches = ['randomness.seed=0', 'train_dataloader.batch_sampler=None',
                    'train_dataloader.dataset.pipeline.3.prob=0.']  # RandomFlip
    curves, results = {}, {}
    for gpus in (1, args.gpus):
        work_dir = osp.join(args.work_dir, f'{gpus}gpu')
        os.makedirs(work_dir, exist_ok=True)
        options = budget_options(data_root, args.epochs, args.total_batch // gpus, 4,
                                 args.scale) + same_batches + args.cfg_options
        train(args.config, work_dir, gpus, options)
        curves[gpus], results[gpus] = logged(work_dir)

    single, multi = curves[1], curves[args.gpus]
    lines = [f'| step | loss, 1 GPU x {args.total_batch} | loss, {args.gpus} GPUs x '
             f'{args.total_batch // args.gpus} | relative difference |', '|---|---|---|---|']
    differences = []
    for step in sorted(set(single) & set(multi)):
        differences.append(abs(multi[step] - single[step]) / abs(single[step]))
        lines.append(f'| {step} | {single[step]:.4f} | {multi[step]:.4f} | '
                     f'{differences[-1]:.1%} |')
    lines.append(f'\nRelative difference of the logged losses: mean {sum(differences) / len(differences):.1%}, '
                 f'max {max(differences):.1%} over {len(differences)} logging windows.')
    for gpus in (1, args.gpus):
        lines.append(f'Final bbox mAP, {gpus} GPU(s): {results[gpus].get("coco/bbox_mAP")}')
    report = '\n'.join(lines)
    print(report)
    Path(args.work_dir, 'results.md').write_text(report + '\n')


if __name__ == '__main__':
    main()
