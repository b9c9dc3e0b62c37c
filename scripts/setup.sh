#!/usr/bin/env bash
# Create .venv in the repository root and install the pinned stack, idempotently.
#
# mmcv 2.1.0 with compiled ops has no wheel on PyPI. In order, this script takes it from:
#   1. the wheelhouse named by HARNESS_WHEELHOUSE (CI points it at ../shared/wheels),
#   2. the local wheel cache HARNESS_WHEEL_CACHE (default: ~/.cache/harness/wheels),
#   3. a build from the PyPI source distribution with its -std=c++17 flags set to -std=c++20
#      (torch 2.14 headers need C++20); about 27 minutes on 2 cores. The built wheel goes into the
#      local cache, so the next setup is fast.
# A wheel only loads beside the torch it was built against (2.14.1 here): a wheel whose import fails
# is skipped. HARNESS_MMCV_BUILD_ONLY=1 builds the wheel into the cache and exits (fills a cache).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=$ROOT/.venv
CACHE=${HARNESS_WHEEL_CACHE:-$HOME/.cache/harness/wheels}
MMCV_VERSION=2.1.0
STAMP=$VENV/.harness-setup
want=$(cat requirements.txt scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16)

log() { printf '[setup] %s\n' "$*"; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import mmcv._ext, harness' 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
log "installing pinned requirements (torch first)"
"${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
"${PIP[@]}" install -q -r requirements.txt

mmcv_ok() { "$VENV/bin/python" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; }

try_wheel_dir() {
  local dir=$1 whl
  [ -n "$dir" ] && [ -d "$dir" ] || return 1
  for whl in "$dir"/mmcv-$MMCV_VERSION-cp311-cp311-linux_x86_64.whl "$dir"/mmcv-$MMCV_VERSION-*.whl; do
    [ -f "$whl" ] || continue
    log "trying mmcv wheel $whl"
    if "${PIP[@]}" install -q --no-deps --force-reinstall "$whl" && mmcv_ok; then return 0; fi
    log "  $whl does not load here; skipping it"
  done
  return 1
}

build_mmcv() {
  local work
  work=$(mktemp -d)
  log "building mmcv $MMCV_VERSION with ops from source (about 27 minutes on 2 cores)"
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$work"
  tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
  mkdir -p "$CACHE"
  (cd "$work/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$CACHE" .)
  rm -rf "$work"
}

if [ "${HARNESS_MMCV_BUILD_ONLY:-0}" = 1 ]; then  # build the wheel into the cache and stop (to fill a cache)
  build_mmcv
  ls "$CACHE"/mmcv-$MMCV_VERSION-*.whl
  exit 0
fi

if mmcv_ok; then
  log "mmcv $MMCV_VERSION with ops already installed"
elif try_wheel_dir "${HARNESS_WHEELHOUSE:-}" || try_wheel_dir "$CACHE"; then
  log "mmcv installed from a wheel"
else
  build_mmcv
  try_wheel_dir "$CACHE" || { echo "[setup] error: the mmcv wheel built into $CACHE does not import; see the build log above" >&2; exit 1; }
  log "mmcv built and cached in $CACHE"
fi

"${PIP[@]}" install -q --no-deps -e .
"$VENV/bin/python" -c 'import torch, mmcv._ext, mmdet, harness; print("[setup] ok: torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
echo "$want" > "$STAMP"
