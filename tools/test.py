"""Evaluate a checkpoint on the test set of an mmdet or mmpretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
                                           [--show-dir DIR] [--cfg-options KEY=VALUE ...]
                                           [--launcher {none,pytorch,slurm,mpi}] [--compile [MODE]]

Multi-process: ``tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS`` or ``tools/slurm_test.sh``.
"""
import argparse
import os
import os.path as osp
import sys

# The helpers live in train.py, next to this file (sys.path[0] when run as a script).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from train import (UserError, add_common_args, apply_common_args,  # noqa: E402
                   build_runner, check_checkpoint_fits, check_data,
                   checkpoint_errors_as_user_errors, close_distributed,
                   config_errors_as_user_errors, is_detection, load_config, require_file,
                   run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (local path or URL)')
    parser.add_argument('--out', metavar='FILE.pkl',
                        help='also dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='save visualised predictions here (relative '
                        'paths end up inside the work dir\'s timestamped folder)')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_visualization(cfg, show_dir: str) -> None:
    """Switch on the VisualizationHook that mmdet and mmpretrain configs carry."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise UserError('--show-dir needs default_hooks.visualization in the config, e.g. '
                        "visualization=dict(type='VisualizationHook')")
    if is_detection(cfg):  # mmdet's DetVisualizationHook
        hook['draw'] = True
        hook['test_out_dir'] = show_dir
    else:  # mmpretrain's VisualizationHook; draws one sample per `interval` otherwise
        hook['enable'] = True
        hook['out_dir'] = show_dir
        hook['interval'] = 1


def main(argv=None) -> None:
    args = parse_args(argv)
    require_file(args.config, 'config file')
    require_file(args.checkpoint, 'checkpoint file')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise UserError(f'--out must name a .pkl or .pickle file, got {args.out}')
    cfg = load_config(args.config, args.cfg_options)
    apply_common_args(cfg, args, args.config)

    cfg.load_from = args.checkpoint
    if args.show_dir is not None:
        enable_visualization(cfg, args.show_dir)

    check_data(cfg, ['test'])
    from cmt_mm.utils.checkpoint import read_model_checkpoint
    with checkpoint_errors_as_user_errors():
        # The Runner loads non-strictly: evaluating a partly random model would go unnoticed.
        shapes = read_model_checkpoint(args.checkpoint)
        runner = build_runner(cfg)
        check_checkpoint_fits(runner, args.checkpoint, shapes)
    if args.out is not None:
        # A metric that only dumps predictions; mmdet's variant converts det samples.
        if is_detection(cfg):
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    with config_errors_as_user_errors():
        runner.test()
    close_distributed()


if __name__ == '__main__':
    sys.exit(run_cli(main))
