#!/usr/bin/env bash
# The GPU check (`harness gpu-check`, README "On a cluster") on a machine without a package registry:
#
#   bash scripts/gpu-check.sh [gpu-check options]     # e.g. --only atss:rs; default: the full check
#
# Needs python3 (HARNESS_GPU_PYTHON_BIN) with a CUDA build of torch 2.4 or newer, and the wheelhouse made by
# scripts/gpu-wheels.sh carried beside the code (HARNESS_GPU_WHEELHOUSE, default wheelhouse/gpu). Installs,
# with --no-index and no dependency resolution, the carried wheels of what python3 lacks (mmcv, mmengine
# and mmdet always: the harness pins them) into a folder of their own (HARNESS_GPU_SITE, default .gpu-site)
# put on PYTHONPATH. No virtual environment: the machine's python3 may itself be one, and a
# --system-site-packages environment made from it would not see its torch. Then prints `harness doctor`
# for the record and runs `harness gpu-check` with this script's arguments (its exit code is this one's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${HARNESS_GPU_PYTHON_BIN:-python3}
WH=${HARNESS_GPU_WHEELHOUSE:-$ROOT/wheelhouse/gpu}
SITE=${HARNESS_GPU_SITE:-$ROOT/.gpu-site}
export PYTHONUNBUFFERED=1

die() { printf '[gpu-check] error: %s\n' "$*" >&2; exit 1; }
log() { printf '[gpu-check] %s\n' "$*"; }

command -v "$PY" >/dev/null || die "no $PY here: set HARNESS_GPU_PYTHON_BIN to a python with a CUDA build of torch"
if ! torch_problem=$("$PY" -c '
import torch
v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
print(f"torch {torch.__version__} is older than 2.4" if v < (2, 4) else "")' 2>&1); then
  last=$(printf '%s\n' "$torch_problem" | tail -n1)
  torch_problem="torch does not import in $PY: ${last:-it exited with an error}"
fi
[ -z "$torch_problem" ] || die "$torch_problem (set HARNESS_GPU_PYTHON_BIN to a python with a CUDA torch >= 2.4)"
compgen -G "$WH/*.whl" >/dev/null || die "no wheels in $WH: make them with scripts/gpu-wheels.sh where a package registry answers, and carry them beside the code"

# The wheels to install: mmcv, mmengine, mmdet, and whatever python3 lacks (any OpenCV build gives cv2).
mapfile -t wheels < <("$PY" - "$WH" <<'PYEOF'
import importlib.metadata as metadata
import importlib.util
import pathlib
import re
import sys

ALWAYS = {"mmcv", "mmengine", "mmdet"}
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
    try:
        metadata.version(name)
        present = True
    except metadata.PackageNotFoundError:
        present = name == "opencv-python" and importlib.util.find_spec("cv2") is not None
    if name in ALWAYS or not present:
        print(whl)
PYEOF
)
stamp=$(printf '%s\n' "${wheels[@]}" | xargs -n1 basename | sha256sum | cut -c1-16)
if [ "$(cat "$SITE/.harness-gpu-site" 2>/dev/null)" = "$stamp" ]; then
  log "carried wheels already installed in $SITE"
else
  log "installing ${#wheels[@]} carried wheel(s) into $SITE: $(printf '%s\n' "${wheels[@]}" | xargs -n1 basename | cut -d- -f1 | tr '\n' ' ')"
  rm -rf "$SITE"
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" "${wheels[@]}"
  echo "$stamp" > "$SITE/.harness-gpu-site"
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! import_problem=$("$PY" -c 'import torchvision, mmcv._ext, mmdet.models, harness.detectors.plugin' 2>&1); then
  die "the stack does not import: $(printf '%s\n' "$import_problem" | tail -n1) (the mmcv wheel must be built against this torch, $("$PY" -c 'import torch; print(torch.__version__)'))"
fi
"$PY" -m harness doctor || true  # the node, for the record; its notes and problems do not stop the check
exec "$PY" -m harness gpu-check "$@"
