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
#
# The torch build (README, "On a cluster"): PyPI's torch 2.14.1 is built for CUDA 13.0 and needs an NVIDIA
# driver >= 580. A site with an older driver picks another build of the same version:
#   HARNESS_TORCH_VARIANT=cu126       PyTorch's index for that variant (https://download.pytorch.org/whl/cu126;
#                                     also cu118, cu128, cpu, rocm6.4, ...),
#   HARNESS_TORCH_INDEX_URL=URL       any index (a site mirror) that serves torch and torchvision.
# Everything else stays pinned. The choice is part of the setup stamp, and a changed choice replaces the
# installed torch and torchvision. `harness doctor` says which variant a node's driver needs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=$ROOT/.venv
CACHE=${HARNESS_WHEEL_CACHE:-$HOME/.cache/harness/wheels}
MMCV_VERSION=2.1.0
STAMP=$VENV/.harness-setup
TORCH_STAMP=$VENV/.harness-torch  # the torch index the installed torch came from ("default": PyPI)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

TORCH_INDEX=${HARNESS_TORCH_INDEX_URL:-}
if [ -n "${HARNESS_TORCH_VARIANT:-}" ]; then
  [ -z "$TORCH_INDEX" ] || die "set HARNESS_TORCH_VARIANT or HARNESS_TORCH_INDEX_URL, not both"
  [[ $HARNESS_TORCH_VARIANT =~ ^(cpu|cu[0-9]{3}|rocm[0-9]+(\.[0-9]+)*|xpu)$ ]] ||
    die "HARNESS_TORCH_VARIANT=$HARNESS_TORCH_VARIANT is not a PyTorch build variant: use cpu, cuXYZ (e.g. cu126) or rocmX.Y"
  TORCH_INDEX=https://download.pytorch.org/whl/$HARNESS_TORCH_VARIANT
fi
TORCH_CHOICE=${TORCH_INDEX:-default}
# torch and torchvision as pinned in requirements.txt
mapfile -t TORCH_PINS < <(grep -E '^(torch|torchvision)==' requirements.txt)
[ "${#TORCH_PINS[@]}" = 2 ] || die "requirements.txt must pin torch== and torchvision== (found: ${TORCH_PINS[*]:-nothing})"
want=$( { cat requirements.txt scripts/setup.sh pyproject.toml; echo "torch index: $TORCH_CHOICE"; } | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import mmcv._ext, harness' 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
installed_choice=$(cat "$TORCH_STAMP" 2>/dev/null || echo default)  # a venv from before the choice: PyPI's
if [ "$installed_choice" != "$TORCH_CHOICE" ] && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  log "torch from $installed_choice; replacing it with the build from $TORCH_CHOICE"
  "${PIP[@]}" uninstall -q -y torch torchvision
fi
log "installing pinned requirements (torch first, from ${TORCH_INDEX:-the default index})"
"${PIP[@]}" install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "${TORCH_PINS[@]}"
echo "$TORCH_CHOICE" > "$TORCH_STAMP"
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
  try_wheel_dir "$CACHE" || die "the mmcv wheel built into $CACHE does not import; see the build log above"
  log "mmcv built and cached in $CACHE"
fi

# apt_install PACKAGE WHAT: best-effort apt install as root (or passwordless sudo); 0 when installed.
apt_install() {
  local APT=() aptlog
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then APT=(apt-get); elif sudo -n true 2>/dev/null; then APT=(sudo -n apt-get); fi
  fi
  [ ${#APT[@]} -gt 0 ] || return 1
  log "installing $2 ($1) with apt"
  aptlog=$(mktemp "/tmp/harness-$1-apt.XXXXXX.log")
  if DEBIAN_FRONTEND=noninteractive "${APT[@]}" -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 install -y -q \
      --no-install-recommends "$1" >"$aptlog" 2>&1 ||
     { DEBIAN_FRONTEND=noninteractive "${APT[@]}" -o DPkg::Lock::Timeout=300 update -q &&
       DEBIAN_FRONTEND=noninteractive "${APT[@]}" -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0 install -y -q \
         --no-install-recommends "$1"; } >>"$aptlog" 2>&1; then
    rm -f "$aptlog"
    return 0
  fi
  log "could not install $1 (log: $aptlog)"
  return 1
}

# tcmalloc, the memory allocator the harness's local run processes preload (harness/run/allocator.py): the
# same results, 9-18 % faster training steps on CPU. Best effort: without it runs use the C library's malloc.
if ! ldconfig -p 2>/dev/null | grep -q 'libtcmalloc_minimal\.so\.4 '; then
  apt_install libtcmalloc-minimal4 "tcmalloc, the allocator local runs preload" ||
    log "no tcmalloc: local runs use the C library's malloc (same results, slower); install libtcmalloc-minimal4" \
        "(or gperftools) to speed them up"
fi

# A C compiler for the harness's CPU RoIAlign kernels (harness/detectors/roi_align.c, built below): torchvision's
# values, 3-20 times faster. Best effort: without one RoIAlign runs torchvision's kernels (same results, slower).
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  apt_install gcc "a C compiler for the harness's RoIAlign and SGD kernels" ||
    log "no C compiler: RoIAlign and SGD on a CPU run torchvision's and torch's kernels (same results, slower); install gcc to speed them up"
fi

"${PIP[@]}" install -q --no-deps -e .
"$VENV/bin/python" -c 'import torch, mmcv._ext, mmdet, harness; print("[setup] ok: torch", torch.__version__, "CUDA", torch.version.cuda, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
"$VENV/bin/python" -m harness.detectors.native ||
  log "a C kernel did not build (above): that operation runs torch's or torchvision's kernels on a CPU (same results, slower)"
echo "$want" > "$STAMP"
