"""Package metadata, requirements and a normal (non-editable) wheel build."""
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import cmt_mm

REPO = Path(__file__).resolve().parents[1]
PINS = {'mmengine': '0.10.7', 'mmcv': '2.1.0', 'mmdet': '3.3.0', 'mmpretrain': '1.2.0',
        'torch': '2.14.1', 'torchvision': '0.29.1'}


def requirement_lines(name):
    lines = (line.split('#')[0].strip() for line in (REPO / 'requirements' / name).open())
    return [line for line in lines if line]


def test_version_matches_the_installed_metadata():
    assert re.fullmatch(r'\d+\.\d+\.\d+', cmt_mm.__version__)
    assert importlib.metadata.version('cmt_mm') == cmt_mm.__version__


def test_versions_are_pinned_where_they_matter():
    pinned = {}
    for name in ('runtime.txt', 'detection.txt'):
        for line in requirement_lines(name):
            package, _, version = line.partition('==')
            pinned[package] = version
    assert {k: pinned.get(k) for k in PINS} == PINS
    assert 'pycocotools>=2.0.8' in requirement_lines('detection.txt')
    assert any(line.startswith('numpy') for line in requirement_lines('runtime.txt'))


def test_wheel_declares_the_requirement_files(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '-q', '-w', str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel, = tmp_path.glob('cmt_mm-*.whl')
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith('METADATA'))).decode()
    assert 'cmt_mm/models/backbones/cmt.py' in names
    assert not any(n.startswith('tests/') for n in names)
    requires = re.findall(r'^Requires-Dist: (.+)$', metadata, re.M)
    for line in requirement_lines('runtime.txt'):
        assert line.replace(' ', '') in [r.replace(' ', '') for r in requires]
    for line in requirement_lines('detection.txt'):
        assert f'{line}; extra == "det"'.replace(' ', '') in [r.replace(' ', '') for r in requires]
