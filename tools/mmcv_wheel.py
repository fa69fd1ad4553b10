"""Find a prebuilt mmcv wheel with compiled ops that works with this interpreter and torch.

Used by tools/setup_env.sh, before falling back to a 30-minute build from source:

    python tools/mmcv_wheel.py --version 2.1.0 DIR [DIR ...]

prints the first wheel in the directories (in order) that matches this Python's tag and
actually imports ``mmcv._ext`` and runs ``nms`` beside the installed torch; exits 1 if none does.
Each candidate is tried in a scratch directory, so a bad wheel never touches the environment.
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional

CHECK = '''
import mmcv, torch
from mmcv.ops import nms
assert mmcv.__version__ == {version!r}, mmcv.__version__
nms(torch.rand(4, 4).cumsum(1), torch.rand(4), 0.5)
'''


def python_tag() -> str:
    return f'cp{sys.version_info.major}{sys.version_info.minor}'


def candidate_wheels(dirs: Iterable[str], version: str, tag: Optional[str] = None) -> List[Path]:
    """Wheels named for this mmcv version and Python tag, directory by directory."""
    tag = tag or python_tag()
    found = []
    for directory in dirs:
        if directory and Path(directory).is_dir():
            found += sorted(Path(directory).glob(f'mmcv-{version}-{tag}-{tag}-*.whl'))
    return found


def wheel_works(wheel: Path, version: str) -> bool:
    """Install ``wheel`` into a scratch directory and run mmcv's compiled nms from there."""
    with tempfile.TemporaryDirectory() as target:
        install = subprocess.run(
            [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-compile',
             '--disable-pip-version-check', '--target', target, str(wheel)],
            capture_output=True, text=True)
        if install.returncode:
            print(f'{wheel}: does not install: {install.stderr.strip()[-300:]}', file=sys.stderr)
            return False
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [target, os.environ.get('PYTHONPATH')])))
        check = subprocess.run([sys.executable, '-c', CHECK.format(version=version)], env=env,
                               capture_output=True, text=True)
        if check.returncode:
            reason = (check.stderr.strip().splitlines() or ['unknown error'])[-1]
            print(f'{wheel}: does not work here: {reason}', file=sys.stderr)
            return False
    return True


def find_working_wheel(dirs: Iterable[str], version: str) -> Optional[Path]:
    return next((w for w in candidate_wheels(dirs, version) if wheel_works(w, version)), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dirs', nargs='*', help='directories to search, in order')
    parser.add_argument('--version', default='2.1.0', help='mmcv version')
    args = parser.parse_args(argv)
    wheel = find_working_wheel(args.dirs, args.version)
    if wheel is None:
        return 1
    print(wheel)
    return 0


if __name__ == '__main__':
    sys.exit(main())
