"""A run's config: the cell bound to its data (the builder's LVIS test settings here; the schedule in
test_schedule_fit)."""

from __future__ import annotations

import json

import pytest

from harness.detectors import build_cell_config
from harness.experiments.spec import parse_spec
from harness.detectors.builder import cell_changes
from harness.run.train import build_config


class FakePaths:
    def __init__(self, tmp_path, kind):
        self.kind, self.classes, self.num_classes = kind, tuple("abcdefgh"), 8
        self.category_ids = None  # as DatasetPaths: set for coco_format data only
        self.val_ann = tmp_path / "val.json"
        self.val_ann.write_text(json.dumps({"images": [{"id": i} for i in range(10)]}))

    def mmdet_dataset(self, split, pipeline, **kwargs):
        return {"type": "CocoDataset", "split": split, "pipeline": pipeline, **kwargs}


def run_of(detector, loss, kind):
    spec = parse_spec({"detectors": [detector], "losses": [loss], "dataset": {"kind": kind}}, name="t",
                      detectors=[detector], losses_loader=lambda modules, origin="": [loss])
    return spec.runs()[0]


@pytest.mark.parametrize("loss, thr", [("ce", 1e-4), ("rs", 0.60)])
def test_lvis_runs_keep_300_detections_at_the_lvis_threshold(tmp_path, loss, thr):
    cfg = build_config(run_of("mask_rcnn", loss, "synthetic_lvis"), tmp_path / "work", FakePaths(tmp_path, "lvis"))
    assert cfg.model.test_cfg.rcnn.max_per_img == 300 and cfg.model.test_cfg.rcnn.score_thr == thr
    assert cfg.model.test_cfg.rpn.max_per_img == 100  # proposals: unchanged


def test_coco_runs_keep_the_cells_test_settings(tmp_path):
    cfg = build_config(run_of("mask_rcnn", "ce", "synthetic"), tmp_path / "work", FakePaths(tmp_path, "coco"))
    cell = build_cell_config("mask_rcnn", "ce", classes=tuple("abcdefgh"), num_classes=8, profile="tiny")
    assert cfg.model.test_cfg == cell.model.test_cfg


def test_dense_detectors_on_lvis_use_mmdets_lvis_threshold():
    cfg = build_cell_config("solov2", "rs", classes=("a",), num_classes=1, profile="tiny", dataset="lvis")
    assert cfg.model.test_cfg.max_per_img == 300 and cfg.model.test_cfg.score_thr == 1e-4


def test_lvis_settings_are_documented_changes_of_the_builder():
    changes = {c.path: c for c in cell_changes("mask_rcnn", "rs", profile="tiny", dataset="lvis")}
    assert changes["model.test_cfg.rcnn.score_thr"].value == 0.60
    assert "LVIS" in changes["model.test_cfg.rcnn.score_thr"].why
    assert "model.test_cfg.rpn.max_per_img" not in changes or changes["model.test_cfg.rpn.max_per_img"].value == 100
