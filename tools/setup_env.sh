#!/usr/bin/env bash
# Create (or complete) the project's virtual environment and install everything it needs,
# including mmcv 2.1.0 with its compiled ops.
#
#   tools/setup_env.sh [VENV_DIR]          (default: .venv)
#
# Environment:
#   CMT_MM_PYTHON      interpreter used to create the venv (default: python3)
#   CMT_MM_WHEELHOUSE  a directory that may hold a prebuilt mmcv 2.1.0 wheel; used when it matches
#                      this interpreter and torch (checked by importing mmcv._ext)
#   CMT_MM_CACHE       where built mmcv wheels are kept between clones
#                      (default: ${XDG_CACHE_HOME:-~/.cache}/cmt_mm)
#   MAX_JOBS           parallel compile jobs for the mmcv build (default: number of cores)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$ROOT/.venv}
PYTHON=${CMT_MM_PYTHON:-python3}
CACHE=${CMT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cmt_mm}
STAMP=$VENV/.cmt_mm_installed
MMCV_VERSION=2.1.0

say() { printf '[setup] %s\n' "$*"; }

stamp_key() {
    cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" | sha256sum | cut -c1-16
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_key)" ]; then
    say "environment $VENV is up to date"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
# The machine-wide pip configuration may list local indexes that do not exist; their warnings are noise.
pip_install() {
    "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true
    return "${PIPESTATUS[0]}"
}

pip_install --upgrade pip
pip_install -r "$ROOT/requirements/build.txt"
# torch and the runtime stack first: the mmcv build and the wheel check both need them.
pip_install $(grep -E '^(torch|torchvision)==' "$ROOT/requirements/runtime.txt")
pip_install -r "$ROOT/requirements/runtime.txt"

TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_CACHE=$CACHE/wheels/torch-$TORCH_VERSION

mmcv_ok() {  # prints why not, when not
    "$PY" -c "
import mmcv, mmcv._ext
from mmcv.ops import nms
assert mmcv.__version__ == '$MMCV_VERSION', mmcv.__version__
" 2>&1 | tail -n 1
    return "${PIPESTATUS[0]}"
}

try_wheel_dir() {  # install an mmcv wheel from $1 if it carries working ops for this torch
    local dir=$1 whl
    [ -n "$dir" ] && [ -d "$dir" ] || return 1
    for whl in "$dir"/mmcv-$MMCV_VERSION-$PY_TAG-*.whl; do
        [ -f "$whl" ] || continue
        say "trying $whl"
        pip_install --no-deps --force-reinstall "$whl"
        if mmcv_ok; then
            say "mmcv $MMCV_VERSION with compiled ops installed from $whl"
            # Keep a working wheel in the cache so later clones need neither the wheelhouse nor a build.
            mkdir -p "$WHEEL_CACHE"
            [ -f "$WHEEL_CACHE/$(basename "$whl")" ] || cp "$whl" "$WHEEL_CACHE/"
            return 0
        fi
        say "$whl does not work with torch $TORCH_VERSION here; skipping it"
        "$PY" -m pip uninstall -q -y mmcv
    done
    return 1
}

build_mmcv() {
    local tmp src
    tmp=$(mktemp -d)
    say "building mmcv $MMCV_VERSION with compiled ops from PyPI's sdist (30+ minutes on 2 cores)"
    # --no-build-isolation: mmcv's setup.py imports pkg_resources and torch even for its metadata.
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
        "mmcv==$MMCV_VERSION" -d "$tmp"
    tar -xzf "$tmp/mmcv-$MMCV_VERSION.tar.gz" -C "$tmp"
    src=$tmp/mmcv-$MMCV_VERSION
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes c++14/c++17.
    sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/setup.py"
    mkdir -p "$WHEEL_CACHE"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WHEEL_CACHE" "$src"
    rm -rf "$tmp"
}

if mmcv_ok >/dev/null; then
    say "mmcv $MMCV_VERSION with compiled ops already installed"
elif try_wheel_dir "${CMT_MM_WHEELHOUSE:-}" || try_wheel_dir "$WHEEL_CACHE"; then
    :
else
    build_mmcv
    try_wheel_dir "$WHEEL_CACHE" || { say "ERROR: the mmcv build did not produce working ops"; exit 1; }
fi

pip_install -r "$ROOT/requirements/detection.txt" -r "$ROOT/requirements/tests.txt"
pip_install --no-deps -e "$ROOT"
"$PY" -c 'import cmt_mm, mmdet, mmpretrain, mmcv._ext; print("[setup] stack ok: cmt_mm", cmt_mm.__version__)'
stamp_key > "$STAMP"
