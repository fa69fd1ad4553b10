"""One training iteration and one COCO evaluation of the shipped CMT-Ti detectors on COCO128.

tools/train.py runs as a subprocess on a config written into tmp_path that inherits the
shipped one and shrinks only the scale of the run: 2 training images at 320x192 (one batch,
one epoch), validation on 2 images, scored by mmdet's CocoMetric (pycocotools) against the
real COCO128 annotations.
"""
import json
import math
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
# CI checks out ../shared beside the repository, so missing data is a failure, not a skip.
COCO128 = osp.normpath(osp.join(REPO, '..', 'shared', 'data', 'coco128'))

SMALL_RUN = """
_base_ = {base!r}
data_root = {data_root!r}
scale = (320, 192)

# No ImageNet checkpoint here; an untrained detector scores every box below mmdet's
# threshold of 0.05, and CocoMetric reports nothing for an empty result.
model = dict(backbone=dict(init_cfg=None), test_cfg={test_cfg!r})

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root=data_root, indices=2,
        pipeline=[dict(t, scale=scale) if t.type == 'Resize' else t
                  for t in _base_.train_dataloader.dataset.pipeline]))
# COCO128's val json lists the same images as train2017/; there is no val2017/.
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root=data_root, indices=2, data_prefix=dict(img='train2017/'),
        pipeline=[dict(t, scale=scale) if t.type == 'Resize' else t
                  for t in _base_.val_dataloader.dataset.pipeline]))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=None)
"""


@pytest.fixture(scope='module')
def coco128():
    expected = ['annotations/instances_train2017.json', 'annotations/instances_val2017.json',
                'train2017']
    missing = [name for name in expected if not osp.exists(osp.join(COCO128, name))]
    if missing:
        pytest.fail(f'COCO128 is expected at {COCO128} (../shared/data/coco128 beside the '
                    f'checkout), but {", ".join(missing)} is missing there')
    return COCO128 + '/'


def scalar_records(work_dir: Path) -> list:
    logs = list(work_dir.glob('*/vis_data/scalars.json'))
    assert len(logs) == 1, logs
    return [json.loads(line) for line in logs[0].read_text().splitlines()]


@pytest.mark.parametrize('config, test_cfg, metrics', [
    ('retinanet_cmt_ti_1x_coco.py', dict(score_thr=0.0), ['coco/bbox_mAP']),
    ('mask_rcnn_cmt_ti_1x_coco.py', dict(rcnn=dict(score_thr=0.0)),
     ['coco/bbox_mAP', 'coco/segm_mAP']),
])
def test_one_iteration_and_evaluation(config, test_cfg, metrics, coco128, tmp_path):
    small_config = tmp_path / f'small_{config}'
    small_config.write_text(SMALL_RUN.format(
        base=osp.join(REPO, 'configs', config), data_root=coco128, test_cfg=test_cfg))
    work_dir = tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, TRAIN, str(small_config), '--work-dir', str(work_dir)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    records = scalar_records(work_dir)
    train_records = [r for r in records if 'loss' in r]
    assert [r['iter'] for r in train_records] == [1]  # one iteration, logged
    losses = {k: v for k, v in train_records[0].items() if k.startswith('loss')}
    assert len(losses) > 1, train_records  # the total and its parts
    assert all(math.isfinite(v) for v in losses.values()), losses

    val_records = [r for r in records if 'coco/bbox_mAP' in r]
    assert len(val_records) == 1, records
    for metric in metrics:
        value = val_records[0].get(metric)
        assert isinstance(value, float) and value >= 0, (metric, val_records[0])
