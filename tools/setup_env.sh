#!/usr/bin/env bash
# Create (or complete) the project's virtual environment and install everything it needs,
# including mmcv 2.1.0 with its compiled ops.
#
#   tools/setup_env.sh [VENV_DIR]          (default: .venv)
#
# Environment:
#   CMT_MM_PYTHON      interpreter used to create the venv (default: python3)
#   CMT_MM_WHEELHOUSE  a directory that may hold a prebuilt mmcv 2.1.0 wheel; used when it matches
#                      this interpreter and torch (checked by running its ops; tools/mmcv_wheel.py)
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
pip_install() {  # fails when pip fails (pipefail)
    "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 |
        { grep -v "^WARNING: Location" || true; }
}

pip_install --upgrade pip
pip_install -r "$ROOT/requirements/build.txt"
# torch and the runtime stack first: the mmcv build and the wheel check both need them.
pip_install $(grep -E '^(torch|torchvision)==' "$ROOT/requirements/runtime.txt")
pip_install -r "$ROOT/requirements/runtime.txt"

TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
WHEEL_CACHE=$CACHE/wheels/torch-$TORCH_VERSION

mmcv_installed() {
    "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null
}

build_mmcv() {  # into $WHEEL_CACHE
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

if mmcv_installed; then
    say "mmcv $MMCV_VERSION with compiled ops already installed"
else
    wheel=$("$PY" "$ROOT/tools/mmcv_wheel.py" --version "$MMCV_VERSION" \
        ${CMT_MM_WHEELHOUSE:+"$CMT_MM_WHEELHOUSE"} "$WHEEL_CACHE") || {
        build_mmcv
        wheel=$("$PY" "$ROOT/tools/mmcv_wheel.py" --version "$MMCV_VERSION" "$WHEEL_CACHE") ||
            { say "ERROR: the mmcv build did not produce working ops"; exit 1; }
    }
    say "installing $wheel"
    pip_install --no-deps --force-reinstall "$wheel"
    # Keep the wheel in the cache, so later clones need neither the wheelhouse nor a build.
    mkdir -p "$WHEEL_CACHE"
    [ -f "$WHEEL_CACHE/$(basename "$wheel")" ] || cp "$wheel" "$WHEEL_CACHE/"
fi

pip_install -r "$ROOT/requirements/detection.txt" -r "$ROOT/requirements/tests.txt"
pip_install --no-deps -e "$ROOT"
"$PY" -c 'import cmt_mm, mmdet, mmpretrain, mmcv._ext; print("[setup] stack ok: cmt_mm", cmt_mm.__version__)'
stamp_key > "$STAMP"
