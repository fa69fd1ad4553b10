"""tools/train.py and tools/test.py name missing data and checkpoints in one line, exit 2.

The shipped COCO configs run as subprocesses, as users run them; the checks happen before
the runner is built, so empty files stand in for the data and the checkpoints.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest

from cli_errors import error_line

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
RETINANET = osp.join(REPO, 'configs', 'retinanet_cmt_ti_1x_coco.py')
MASK_RCNN = osp.join(REPO, 'configs', 'mask_rcnn_cmt_ti_1x_coco.py')


def run(args, cwd, coco_root=None):
    env = dict(os.environ)
    env.pop('COCO_ROOT', None)
    if coco_root is not None:
        env['COCO_ROOT'] = coco_root
    return subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture
def coco_root(tmp_path):
    """An (empty) COCO layout: enough for checks that only look for the paths."""
    root = tmp_path / 'coco'
    (root / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (root / split).mkdir()
        (root / 'annotations' / f'instances_{split}.json').write_text('{}')
    return root


def test_train_with_missing_data_root(tmp_path):
    missing = tmp_path / 'no_coco'
    proc = run([TRAIN, RETINANET, '--cfg-options',
                f'train_dataloader.dataset.data_root={missing}/'], cwd=str(tmp_path))
    line = error_line(proc)
    assert f'train_dataloader.dataset (CocoDataset): data_root not found: {missing}/' in line
    assert '<data_root>/annotations/instances_train2017.json' in line
    assert '<data_root>/train2017/*.jpg' in line
    assert '--cfg-options train_dataloader.dataset.data_root=DIR' in line
    assert not (tmp_path / 'work_dirs').exists()  # nothing was built


def test_test_with_missing_data_root_from_coco_root(tmp_path):
    missing = str(tmp_path / 'no_coco') + '/'
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    line = error_line(run([TEST, MASK_RCNN, str(checkpoint)], cwd=str(tmp_path),
                          coco_root=missing))
    assert f'test_dataloader.dataset (CocoDataset): data_root not found: {missing}' in line
    assert '<data_root>/annotations/instances_val2017.json' in line
    assert 'the COCO_ROOT environment variable' in line


def test_train_checks_validation_data_too(coco_root, tmp_path):
    (coco_root / 'val2017').rmdir()
    line = error_line(run([TRAIN, RETINANET], cwd=str(tmp_path), coco_root=f'{coco_root}/'))
    assert ('val_dataloader.dataset (CocoDataset): data_prefix.img not found: '
            f'{coco_root}/val2017/') in line


def test_train_with_missing_pretrained_backbone(coco_root, tmp_path):
    line = error_line(run([TRAIN, MASK_RCNN], cwd=str(tmp_path), coco_root=f'{coco_root}/'))
    assert ('pretrained checkpoint not found: checkpoints/cmt-ti_in1k.pth (set by '
            'model.backbone.init_cfg.checkpoint)') in line
    assert 'tools/model_converters/cmt_to_mm.py RELEASED.pth checkpoints/cmt-ti_in1k.pth' in line
    assert '--cfg-options model.backbone.init_cfg.checkpoint=PATH' in line
    assert '--cfg-options model.backbone.init_cfg=None' in line
