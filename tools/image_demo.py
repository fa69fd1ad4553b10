"""Detect objects in one image with an mmdet config and checkpoint, and draw the result.

    python tools/image_demo.py IMAGE CONFIG CHECKPOINT --out-file pred.png
                               [--score-thr 0.3] [--device cpu] [--draw-scale 1]
                               [--cfg-options ...]

Boxes, class names, scores and instance masks above ``--score-thr`` are drawn with mmdet's
``DetLocalVisualizer``; ``--draw-scale`` enlarges the picture so that small images stay
legible. Missing files end with a one-line message and exit status 2.
"""
import argparse
import os.path as osp
import sys

# The command-line helpers live in train.py, next to this file (sys.path[0] as a script).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from train import UserError, load_config, require_file, run_cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Draw a detector\'s predictions on an image')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (local path or URL)')
    parser.add_argument('--out-file', required=True, help='where to write the picture')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predictions with at least this score')
    parser.add_argument('--device', default='cpu', help='e.g. cpu or cuda:0')
    parser.add_argument('--draw-scale', type=int, default=1,
                        help='draw on the image enlarged this many times')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, as in tools/train.py')
    return parser.parse_args(argv)


def enlarge(image, result, factor: int):
    """The image and its predictions, scaled up by an integer factor (only for drawing)."""
    import mmcv

    pred = result.pred_instances.clone()
    pred.bboxes = pred.bboxes * factor
    if 'masks' in pred:
        pred.masks = pred.masks.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    result = result.clone()
    result.pred_instances = pred
    return mmcv.imrescale(image, factor), result


def draw(image, result, dataset_meta: dict, out_file: str, score_thr: float) -> None:
    """Draw the predictions (not the ground truth) and write the picture to ``out_file``."""
    from mmdet.visualization import DetLocalVisualizer

    visualizer = DetLocalVisualizer()
    visualizer.dataset_meta = dataset_meta
    visualizer.add_datasample('prediction', image, data_sample=result, draw_gt=False,
                              pred_score_thr=score_thr, out_file=out_file)


def main(argv=None) -> None:
    args = parse_args(argv)
    require_file(args.image, 'image file')
    require_file(args.config, 'config file')
    require_file(args.checkpoint, 'checkpoint file')
    if args.draw_scale < 1:
        raise UserError(f'--draw-scale must be at least 1, got {args.draw_scale}')
    import mmcv

    image = mmcv.imread(args.image, channel_order='rgb')
    if image is None:
        raise UserError(f'cannot read the image {args.image}')

    # Also applies the environment fixes and registers cmt_mm's models (custom_imports).
    cfg = load_config(args.config, args.cfg_options)
    from mmdet.apis import inference_detector, init_detector

    from cmt_mm.utils.compat import allow_mmengine_checkpoints

    # torch>=2.6 loads weights-only: allow exactly what mmengine checkpoints contain.
    allow_mmengine_checkpoints()
    model = init_detector(cfg, args.checkpoint, device=args.device)
    result = inference_detector(model, args.image)
    if args.draw_scale > 1:
        image, result = enlarge(image, result, args.draw_scale)
    draw(image, result, model.dataset_meta, args.out_file, args.score_thr)

    scores = result.pred_instances.scores
    print(f'{int((scores >= args.score_thr).sum())} objects with score >= {args.score_thr} '
          f'drawn to {args.out_file}')


if __name__ == '__main__':
    sys.exit(run_cli(main))
