"""tools/mmcv_wheel.py: which prebuilt mmcv wheel the set-up takes from a wheelhouse."""
import sys
from pathlib import Path

import pytest
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[2]
SHARED_WHEELS = REPO.parent / 'shared' / 'wheels' / 'cpu'
TAG = f'cp{sys.version_info.major}{sys.version_info.minor}'


mmcv_wheel = load_tool('tools/mmcv_wheel.py')


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'not a wheel')
    return path


def test_candidates_match_version_and_python_in_directory_order(tmp_path):
    first = touch(tmp_path / 'house' / f'mmcv-2.1.0-{TAG}-{TAG}-linux_x86_64.whl')
    touch(tmp_path / 'house' / 'mmcv-2.1.0-cp39-cp39-linux_x86_64.whl')
    touch(tmp_path / 'house' / f'mmcv-2.2.0-{TAG}-{TAG}-linux_x86_64.whl')
    second = touch(tmp_path / 'cache' / f'mmcv-2.1.0-{TAG}-{TAG}-linux_x86_64.whl')
    dirs = [str(tmp_path / 'house'), str(tmp_path / 'missing'), '', str(tmp_path / 'cache')]
    assert mmcv_wheel.candidate_wheels(dirs, '2.1.0') == [first, second]


def test_a_broken_wheel_is_skipped(tmp_path, capsys):
    touch(tmp_path / f'mmcv-2.1.0-{TAG}-{TAG}-linux_x86_64.whl')
    assert mmcv_wheel.main([str(tmp_path)]) == 1
    assert 'does not install' in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_WHEELS.is_dir(), reason='no ../shared/wheels/cpu on this machine')
def test_the_shared_wheel_is_taken_after_a_broken_one(tmp_path, capsys):
    touch(tmp_path / f'mmcv-2.1.0-{TAG}-{TAG}-linux_x86_64.whl')
    assert mmcv_wheel.main([str(tmp_path), str(SHARED_WHEELS)]) == 0
    chosen = Path(capsys.readouterr().out.strip())
    assert chosen.parent == SHARED_WHEELS
