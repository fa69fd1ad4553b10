"""The project's main job end to end, on generated data: no download, CPU is enough.

    python tools/run_demo.py [--work-dir work_dirs/demo]

1. generates the synthetic shapes dataset (cmt_mm/utils/synthetic_coco.py) in WORK_DIR/shapes,
   unless a complete one made with the same settings is already there;
2. trains configs/demo/mask_rcnn_cmt_shapes.py from scratch with tools/train.py (WORK_DIR/train);
3. evaluates the final checkpoint on the held-out split with tools/test.py (WORK_DIR/test) and
   prints the COCO box and mask mAP;
4. draws the predictions on a held-out image with tools/image_demo.py (WORK_DIR/prediction.png).

On two CPU cores the whole job takes about six minutes. It stops with a non-zero exit status
as soon as a step fails.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # runs from a source checkout without installing cmt_mm

from cmt_mm.utils.synthetic_coco import is_valid_dataset, make_shapes_coco  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'demo', 'mask_rcnn_cmt_shapes.py')
# The dataset the config is tuned for; its image size must match the config's image_size.
DATASET = dict(num_train=800, num_val=100, image_size=128, seed=0)
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'segm_mAP', 'segm_mAP_50', 'segm_mAP_75')


class StepFailed(Exception):
    """A step of the demo failed; the message says which and where to look."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='where the data, logs, checkpoint and picture go')
    return parser.parse_args(argv)


def run_tool(name: str, *args: str, env: dict) -> None:
    """Run tools/NAME with this Python; its output goes straight to the terminal."""
    cmd = [sys.executable, osp.join(REPO, 'tools', name), *args]
    print(f'\n$ {" ".join(cmd)}', flush=True)
    code = subprocess.run(cmd, env=env).returncode
    if code:
        raise StepFailed(f'tools/{name} failed with exit status {code}')


def prepare_data(root: str) -> None:
    if is_valid_dataset(root, **DATASET):
        print(f'Using the dataset in {root}')
        return
    print(f'Generating the shapes dataset in {root} ...', flush=True)
    make_shapes_coco(root, **DATASET)


def last_checkpoint(train_dir: str) -> str:
    """The checkpoint mmengine's CheckpointHook saved last (it records it in a file)."""
    try:
        with open(osp.join(train_dir, 'last_checkpoint')) as f:
            path = f.read().strip()
    except OSError:
        path = ''
    if not osp.isfile(path):
        raise StepFailed(f'training wrote no checkpoint in {train_dir}')
    return path


def newest_metrics(test_dir: str, since: float) -> str:
    """The metrics json of the test run started at ``since``: TIMESTAMP/TIMESTAMP.json."""
    found = [path for path in glob.glob(osp.join(test_dir, '*', '*.json'))
             if osp.basename(path) == osp.basename(osp.dirname(path)) + '.json'
             and osp.getmtime(path) >= since]
    if not found:
        raise StepFailed(f'tools/test.py wrote no metrics in {test_dir}')
    return max(found, key=osp.getmtime)


def main(argv=None) -> None:
    args = parse_args(argv)
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.join(work_dir, 'shapes')
    train_dir, test_dir = osp.join(work_dir, 'train'), osp.join(work_dir, 'test')
    picture = osp.join(work_dir, 'prediction.png')
    # The config reads its data root from SHAPES_ROOT (a trailing slash: it is a prefix).
    env = dict(os.environ, SHAPES_ROOT=data_root + os.sep)
    # One OpenMP thread unless told otherwise: on a shared two-core machine, a second thread
    # that loses its core stalls every parallel op (measured: 3-5 s a step instead of 0.45 s),
    # while on an idle machine it saves only about a quarter of the time.
    env.setdefault('OMP_NUM_THREADS', '1')
    times = {}

    start = time.time()
    prepare_data(data_root)
    times['data'] = time.time() - start

    start = time.time()
    run_tool('train.py', CONFIG, '--work-dir', train_dir, env=env)
    checkpoint = last_checkpoint(train_dir)
    times['train'] = time.time() - start

    start = time.time()
    run_tool('test.py', CONFIG, checkpoint, '--work-dir', test_dir, env=env)
    metrics_file = newest_metrics(test_dir, since=start)
    times['test'] = time.time() - start

    start = time.time()
    image = osp.join(data_root, 'val', '000001.jpg')
    run_tool('image_demo.py', image, CONFIG, checkpoint, '--out-file', picture,
             '--draw-scale', '4', env=env)
    times['picture'] = time.time() - start

    with open(metrics_file) as f:
        metrics = json.load(f)
    print('\nCOCO metrics on the held-out split:')
    for name in METRICS:
        print(f'  {name:12s} {metrics[f"coco/{name}"]:.3f}')
    print('\nWall time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items())
          + f', total {sum(times.values()):.0f} s')
    print(f'\nWork dir:   {work_dir}\nDataset:    {data_root}\nCheckpoint: {checkpoint}\n'
          f'Metrics:    {metrics_file}\nPicture:    {picture} (predictions on {image})')


if __name__ == '__main__':
    try:
        main()
    except StepFailed as err:
        print(f'run_demo.py: error: {err}', file=sys.stderr)
        sys.exit(1)
