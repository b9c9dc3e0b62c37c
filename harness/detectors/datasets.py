"""mmdet datasets of the harness (registered by :mod:`harness.detectors.plugin`).

``CocoFormatDataset`` reads a user's own COCO-format files (``dataset: {kind: coco_format}``;
:mod:`harness.data.coco_format`). It is mmdet's ``CocoDataset`` except that an annotation without
``area`` takes its box's (``w × h``), as the COCO format allows and as the harness's evaluation does
(:func:`harness.evaluation.inputs.load_ground_truth`): mmdet's parser reads ``ann['area']`` and fails on
exports (CVAT, Label Studio, ...) that leave the key out. mmdet uses the area only to drop annotations
of zero area, so files that do have it train exactly as with ``CocoDataset``.
"""

from __future__ import annotations

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS


@DATASETS.register_module()
class CocoFormatDataset(CocoDataset):
    """mmdet's ``CocoDataset``; an annotation without ``area`` takes its box's."""

    def parse_data_info(self, raw_data_info: dict):
        for ann in raw_data_info["raw_ann_info"]:
            if "area" not in ann:
                _, _, w, h = ann["bbox"]
                ann["area"] = w * h
        return super().parse_data_info(raw_data_info)
