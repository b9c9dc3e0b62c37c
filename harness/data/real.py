"""COCO 2017 and LVIS v1 under a data root (the cluster setting).

The root is an argument (an experiment spec's ``dataset.root``, the CLI's ``--root``) or, when that is not given, the environment
variable ``HARNESS_COCO_ROOT`` / ``HARNESS_LVIS_ROOT``. The layouts are mmdet's standard ones::

    $HARNESS_COCO_ROOT/                      $HARNESS_LVIS_ROOT/
      annotations/instances_train2017.json     annotations/lvis_v1_train.json
      annotations/instances_val2017.json       annotations/lvis_v1_val.json
      train2017/000000000009.jpg ...           train2017/...   (the COCO 2017 images: LVIS v1 names its
      val2017/000000000139.jpg ...             val2017/...      images by coco_url, train2017/ or val2017/)

LVIS v1 val takes images from both COCO folders, so both must be present for either split. A missing
root, file or folder raises :class:`DataRootError` naming the path that was expected (one line).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.data.paths import LVIS_OVERSAMPLE_THR, DatasetPaths

COCO_ENV = "HARNESS_COCO_ROOT"
LVIS_ENV = "HARNESS_LVIS_ROOT"

COCO_NUM_CLASSES = 80
LVIS_V1_NUM_CLASSES = 1203

COCO_LAYOUT = {
    "train": ("annotations/instances_train2017.json", "train2017/"),
    "val": ("annotations/instances_val2017.json", "val2017/"),
}
LVIS_LAYOUT = {
    "train": ("annotations/lvis_v1_train.json", ""),
    "val": ("annotations/lvis_v1_val.json", ""),
}
LVIS_IMAGE_DIRS = ("train2017", "val2017")


class DataRootError(FileNotFoundError):
    """A data root, annotation file or image folder is missing (message: one line naming the path)."""


def _root(root, env: str, name: str) -> Path:
    if root is None or str(root) == "":
        root = os.environ.get(env)
        if not root:
            raise DataRootError(f"no {name} data root: give dataset.root in the spec (`harness data check`: --root) or set {env} "
                                f"(layout: docs/data-evaluation.md)")
        origin = f" (from {env})"
    else:
        origin = ""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataRootError(f"{name} data root {path}{origin} is not a folder (layout: docs/data-evaluation.md)")
    return path.resolve()


def _check(path: Path, name: str, what: str, is_dir: bool = False) -> None:
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        raise DataRootError(f"{name} {what} not found: expected {path} (layout: docs/data-evaluation.md)")


def coco_paths(root: str | Path | None = None, splits=("train", "val")) -> DatasetPaths:
    """COCO 2017 under ``root`` (else ``$HARNESS_COCO_ROOT``); checks the files of ``splits`` exist."""
    base = _root(root, COCO_ENV, "COCO 2017")
    for split in splits:
        ann, img = COCO_LAYOUT[split]
        _check(base / ann, "COCO 2017", f"{split} annotation file")
        _check(base / img, "COCO 2017", f"{split} image folder", is_dir=True)
    return DatasetPaths(
        kind="coco",
        source="real",
        root=base,
        ann_files={s: base / COCO_LAYOUT[s][0] for s in splits},
        img_prefix={s: COCO_LAYOUT[s][1] for s in splits},
        num_classes=COCO_NUM_CLASSES,
        classes=None,
    )


def lvis_paths(root: str | Path | None = None, splits=("train", "val")) -> DatasetPaths:
    """LVIS v1 under ``root`` (else ``$HARNESS_LVIS_ROOT``); training is repeat-factor sampled with
    threshold 1e-3 (mmdet's ``ClassBalancedDataset``, see :meth:`DatasetPaths.mmdet_dataset`)."""
    base = _root(root, LVIS_ENV, "LVIS v1")
    for split in splits:
        _check(base / LVIS_LAYOUT[split][0], "LVIS v1", f"{split} annotation file")
    for d in LVIS_IMAGE_DIRS:
        _check(base / d, "LVIS v1", "image folder (COCO 2017 images)", is_dir=True)
    return DatasetPaths(
        kind="lvis",
        source="real",
        root=base,
        ann_files={s: base / LVIS_LAYOUT[s][0] for s in splits},
        img_prefix={s: LVIS_LAYOUT[s][1] for s in splits},
        num_classes=LVIS_V1_NUM_CLASSES,
        classes=None,
        oversample_thr=LVIS_OVERSAMPLE_THR,
    )


def real_paths(kind: str, root: str | Path | None = None, splits=("train", "val")) -> DatasetPaths:
    """:func:`coco_paths` or :func:`lvis_paths` by ``kind``."""
    if kind == "coco":
        return coco_paths(root, splits)
    if kind == "lvis":
        return lvis_paths(root, splits)
    raise ValueError(f"unknown dataset kind {kind!r}; choose coco or lvis")
