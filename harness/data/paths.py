"""Where a dataset lives and how mmdet reads it: :class:`DatasetPaths`.

One value describes a dataset the same way whether it is the generated synthetic benchmark or COCO 2017 /
LVIS v1 under a data root, so the run code builds its mmdet dataset configs from it without caring which.
Standard library only (mmdet is named by config dicts, never imported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val")

#: LVIS v1 train has 100 170 images; mmdet's / the RS paper's repeat-factor threshold is 1e-3 of them.
LVIS_V1_TRAIN_IMAGES = 100_170
LVIS_OVERSAMPLE_THR = 1e-3


@dataclass(frozen=True)
class DatasetPaths:
    """A dataset on disk in COCO or LVIS v1 format.

    ``kind``: ``"coco"`` (mmdet ``CocoDataset``) or ``"lvis"`` (mmdet ``LVISV1Dataset``);
    ``source``: ``"synthetic"``, ``"real"`` or ``"coco_format"`` (a user's own data). Annotation files are absolute paths; ``img_prefix`` is
    mmdet's ``data_prefix['img']`` per split, relative to ``root`` (LVIS v1 images name their file through
    ``coco_url``, so their prefix is ``""``). ``classes`` is the class names in label order (``None`` for
    the real datasets: mmdet's own class lists apply); ``num_classes`` is always set.
    ``oversample_thr`` is the repeat-factor threshold used for LVIS training (``None`` for COCO).
    """

    kind: str
    source: str
    root: Path
    ann_files: dict = field(default_factory=dict)  # split -> Path
    img_prefix: dict = field(default_factory=dict)  # split -> str
    num_classes: int = 0
    classes: tuple | None = None
    oversample_thr: float | None = None
    params: dict | None = None  # the generator's parameters (synthetic only)
    category_ids: tuple | None = None  # each label's category id (coco_format: the train file's, in its order)
    name: str | None = None  # the dataset's own name (coco_format)

    @property
    def train_ann(self) -> Path:
        return self.ann_files["train"]

    @property
    def val_ann(self) -> Path:
        return self.ann_files["val"]

    def img_dir(self, split: str) -> Path:
        """The folder holding a split's images (for LVIS v1 the root: files are named ``train2017/...``)."""
        return self.root / self.img_prefix[split]

    @property
    def dataset_type(self) -> str:
        """The mmdet dataset: ``LVISV1Dataset``, ``CocoDataset``, or for your own files the harness's
        ``CocoFormatDataset`` (``CocoDataset`` that takes a box's area where an annotation has none)."""
        if self.kind == "lvis":
            return "LVISV1Dataset"
        return "CocoFormatDataset" if self.source == "coco_format" else "CocoDataset"

    def metainfo(self) -> dict:
        """mmdet ``metainfo`` (``{"classes": (...)}``), empty for the real datasets (mmdet's lists apply)."""
        return {"classes": tuple(self.classes)} if self.classes else {}

    def label_to_category_id(self) -> list[int] | None:
        """Category id of each label (coco_format: :attr:`category_ids`; synthetic: ids 1..K in label order);
        ``None`` for the real sets, where it is read from the annotation file (see
        :func:`harness.evaluation.label_to_category_ids`)."""
        if self.category_ids is not None:
            return list(self.category_ids)
        return list(range(1, len(self.classes) + 1)) if self.classes else None

    def mmdet_dataset(
        self,
        split: str,
        pipeline: list | None = None,
        *,
        class_balanced: bool | None = None,
        oversample_thr: float | None = None,
        **extra,
    ) -> dict:
        """The mmdet 3.x dataset config dict of one split.

        Training splits drop images without annotations (``filter_empty_gt``); the LVIS train split is
        wrapped in ``ClassBalancedDataset`` (repeat-factor sampling) unless ``class_balanced=False``, with
        ``oversample_thr`` defaulting to :attr:`oversample_thr`. ``extra`` keys are added to the inner
        dataset dict (e.g. ``backend_args``, ``indices``).
        """
        if split not in self.ann_files:
            raise KeyError(f"split {split!r} is not part of this dataset (have: {', '.join(self.ann_files)})")
        train = split == "train"
        cfg = {
            "type": self.dataset_type,
            "data_root": str(self.root),
            "ann_file": str(self.ann_files[split]),
            "data_prefix": {"img": self.img_prefix[split]},
            "test_mode": not train,
            "pipeline": list(pipeline or []),
        }
        if self.classes:
            cfg["metainfo"] = self.metainfo()
        if train:
            cfg["filter_cfg"] = {"filter_empty_gt": True, "min_size": 32}
        cfg.update(extra)
        if class_balanced is None:
            class_balanced = train and self.kind == "lvis"
        if class_balanced:
            thr = oversample_thr if oversample_thr is not None else (self.oversample_thr or LVIS_OVERSAMPLE_THR)
            return {"type": "ClassBalancedDataset", "oversample_thr": thr, "dataset": cfg}
        return cfg
