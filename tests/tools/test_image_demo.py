"""End-to-end test of tools/image_demo.py with the demo config and random weights."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'tools', 'image_demo.py')
CONFIG = osp.join(REPO, 'configs', 'demo', 'mask_rcnn_cmt_shapes.py')
TIMEOUT = 120


def run_demo(*args):
    return subprocess.run([sys.executable, DEMO, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """The demo detector with random weights, saved as an mmengine checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import save_checkpoint

    from cmt_mm.utils.compat import setup_environment

    setup_environment(detection=True)
    import cmt_mm.models  # noqa: F401  registers cmt_mm.CMT
    from mmdet.registry import MODELS

    cfg = Config.fromfile(CONFIG)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('ckpt') / 'random.pth'
    meta = dict(dataset_meta=dict(classes=cfg.metainfo.classes, palette=cfg.metainfo.palette))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=meta), str(path))
    return path


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    from cmt_mm.utils.synthetic_coco import make_shapes_coco

    root = tmp_path_factory.mktemp('shapes')
    paths = make_shapes_coco(str(root), num_train=0, num_val=1, image_size=128)
    return osp.join(paths['val_images'], '000001.jpg')


@pytest.mark.parametrize('scale', [1, 2])
def test_draws_predictions(checkpoint, image, tmp_path, scale):
    out = tmp_path / 'pred.png'
    # Random weights score about 1 / (classes + 1): a zero threshold draws boxes and masks.
    proc = run_demo(image, CONFIG, checkpoint, '--out-file', out, '--score-thr', 0,
                    '--draw-scale', scale)
    assert proc.returncode == 0, proc.stderr
    assert f'drawn to {out}' in proc.stdout

    with Image.open(out) as drawn:
        assert drawn.format == 'PNG'
        assert drawn.size == (128 * scale, 128 * scale)
        pixels = np.asarray(drawn.convert('RGB'), dtype=np.int16)
    with Image.open(image) as original:
        original = np.asarray(original.resize(drawn.size), dtype=np.int16)
    assert np.abs(pixels - original).mean() > 1, 'nothing was drawn'


@pytest.mark.parametrize('missing', ['image', 'config', 'checkpoint'])
def test_missing_file(checkpoint, image, tmp_path, missing):
    files = dict(image=image, config=CONFIG, checkpoint=checkpoint)
    files[missing] = tmp_path / 'nope'
    proc = run_demo(files['image'], files['config'], files['checkpoint'],
                    '--out-file', tmp_path / 'pred.png')
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f'image_demo.py: error: {missing} file not found: {tmp_path / "nope"}'
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'pred.png').exists()
