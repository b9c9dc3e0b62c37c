#!/usr/bin/env bash
# Fetch the wheels the GPU check needs into a wheelhouse, where a package registry answers, for a GPU
# machine that has none (scripts/gpu-check.sh installs from it with --no-index). Usage:
#
#   bash scripts/gpu-wheels.sh [WHEELHOUSE]          # default: wheelhouse/gpu (git-ignored)
#
# The target is the GPU machine's python3: CPython HARNESS_GPU_PYTHON (default 3.12) on linux x86-64, with
# its own CUDA torch (2.4 or newer). Fetched, binary wheels only:
#   - mmengine, mmdet, pycocotools, scikit-learn (PAA), PyYAML and what they need, at the versions of
#     requirements.txt and of the tested .venv where those name one;
#   - torchvision HARNESS_GPU_TORCHVISION (default 0.26.0, the release for torch 2.11) without its
#     dependencies (torch stays the machine's);
#   - mmcv 2.1.0 with CPU ops for that Python from HARNESS_WHEELHOUSE (default ../shared/wheels), built
#     against the machine's torch (see that folder's README). Its kernels are never called.
# HARNESS_GPU_IMAGE_PACKAGES=FILE lists what the machine already has (the output of
# `python3 -m pip list --format=freeze` there, or one name a line): those are left out (mmcv, mmengine and
# mmdet excepted), which keeps the wheelhouse small; versions given there constrain the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-$ROOT/wheelhouse/gpu}
PYV=${HARNESS_GPU_PYTHON:-3.12}
TORCHVISION=${HARNESS_GPU_TORCHVISION:-0.26.0}
MMCV_WHEELS=${HARNESS_WHEELHOUSE:-$ROOT/../shared/wheels}
IMAGE=${HARNESS_GPU_IMAGE_PACKAGES:-}
PACKAGES=(mmengine mmdet pycocotools scikit-learn PyYAML)
ALWAYS="mmcv mmengine mmdet"  # the harness's pins: carried even when the machine has some version

die() { printf '[gpu-wheels] error: %s\n' "$*" >&2; exit 1; }
log() { printf '[gpu-wheels] %s\n' "$*"; }

[[ $PYV =~ ^3\.[0-9]+$ ]] || die "HARNESS_GPU_PYTHON=$PYV: expected a CPython version like 3.12"
tag=cp${PYV/./}
mmcv_wheel=$(ls "$MMCV_WHEELS"/mmcv-2.1.0-"$tag"-"$tag"-*.whl 2>/dev/null | head -n1 || true)
[ -n "$mmcv_wheel" ] || die "no mmcv 2.1.0 wheel for $tag in $MMCV_WHEELS: set HARNESS_WHEELHOUSE to a folder holding one built against the GPU machine's torch"
[ -z "$IMAGE" ] || [ -f "$IMAGE" ] || die "HARNESS_GPU_IMAGE_PACKAGES=$IMAGE is not a file (make it there with: python3 -m pip list --format=freeze)"

mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
norm() { tr 'A-Z_.' 'a-z--'; }  # a project's normalised name
name_of() { sed -E 's/[=<>~!; ].*//' | norm; }
: > "$work/image-names"
if [ -n "$IMAGE" ]; then
  grep -vE '^\s*(#|$)' "$IMAGE" | name_of | sort -u > "$work/image-names"
  for keep in $ALWAYS; do sed -i "/^$keep\$/d" "$work/image-names"; done
  # any OpenCV build provides cv2, which is all mmengine's opencv-python requirement is for
  grep -qE '^opencv-(contrib-)?python(-headless)?$' "$work/image-names" && echo opencv-python >> "$work/image-names"
fi
in_image() { grep -qx "$(printf '%s' "$1" | norm)" "$work/image-names"; }

# Constraints: the machine's versions for what it has; else requirements.txt's pins, then the tested
# .venv's versions. Never torch and its CUDA libraries (the machine's), nor build tools.
{
  [ -z "$IMAGE" ] || cat "$IMAGE"
  cat requirements.txt
  [ ! -x .venv/bin/python ] || .venv/bin/python -m pip list --format=freeze 2>/dev/null || true
} | { grep -E '^[A-Za-z0-9_.-]+==' || true; } | grep -viE '^(torch|torchvision|triton|nvidia-[^=]*|cuda-[^=]*|setuptools|pip|wheel|harness|mmcv)==' |
  awk -F'==' '{ n = tolower($1); gsub(/[_.]/, "-", n); if (!(n in seen)) { seen[n] = 1; print } }' > "$work/constraints.txt"

platforms=()
for p in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 linux_x86_64; do
  platforms+=(--platform "$p")
done
PIP=(python3 -m pip --disable-pip-version-check download -q --only-binary=:all: --python-version "$PYV"
     --implementation cp "${platforms[@]}" -d "$OUT")
log "downloading ${PACKAGES[*]} and what they need, for CPython $PYV, into $OUT"
"${PIP[@]}" -c "$work/constraints.txt" "${PACKAGES[@]}"
if in_image torchvision; then
  log "the machine has torchvision: not fetched"
else
  log "downloading torchvision==$TORCHVISION (without dependencies)"
  "${PIP[@]}" --no-deps "torchvision==$TORCHVISION"
fi
cp "$mmcv_wheel" "$OUT/"
left=()
for whl in "$OUT"/*.whl; do
  name=$(basename "$whl" | cut -d- -f1)
  if in_image "$name"; then rm -f "$whl"; left+=("$name"); fi
done
[ "${#left[@]}" = 0 ] || log "left out ${#left[@]} the machine has: ${left[*]}"
log "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT: carry it beside the code and run scripts/gpu-check.sh there"
