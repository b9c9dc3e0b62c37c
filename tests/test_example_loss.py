"""The worked example of adding a loss: an external module named in a spec runs through the tiny grid
and shows up in the tables and in `harness check-loss`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.experiments.spec import load_spec
from harness.rows import read_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "example_new_loss.yaml"


def test_the_example_spec_validates_with_its_external_loss():
    spec = load_spec(EXAMPLE)
    assert "qfl" in spec.losses and {(r.detector, r.loss) for r in spec.runs()} >= {("atss", "qfl"), ("faster_rcnn", "qfl")}


def test_the_external_loss_runs_end_to_end_into_the_tables(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["loss_modules"] = [str(REPO / "examples" / "quality_focal.py")]
    data["detectors"] = ["atss"]
    data["dataset"] = {"kind": "synthetic", "train_images": 16, "val_images": 8}
    data["schedule"] = {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2}
    spec = tmp_path / "example.yaml"
    spec.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "harness", "benchmark", str(spec), "--executor", "debug",
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every run trained and was evaluated: a failed run also writes a row, a table line and cells.csv
    rows, corrupt = read_rows(tmp_path / "results" / "example_new_loss")
    assert not corrupt and sorted(r["loss"] for r in rows) == ["focal", "qfl", "rs"]
    assert [(r["loss"], r["status"]) for r in rows if r["status"] != "done"] == []
    assert all(isinstance(r["metrics"].get("bbox_AP"), float) for r in rows)
    cells = pd.read_csv(tmp_path / "results" / "example_new_loss" / "tables" / "cells.csv")
    qfl = cells[(cells["loss"] == "qfl") & (cells["metric"] == "bbox_AP")]
    assert len(qfl) == 1 and qfl["n"].item() == 1 and qfl["done"].item() == 1 and pd.notna(qfl["mean"].item())
    grid = [line for line in proc.stdout.splitlines() if line.startswith("| ATSS")]
    assert grid[0].count(" (1)") == 3 and not any("failed" in line for line in grid)  # the AP table: a value per loss


def test_check_loss_runs_on_the_external_loss():
    proc = subprocess.run([sys.executable, "-m", "harness", "check-loss", "qfl", "--load", "examples/quality_focal.py",
                           "--detector", "atss"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "ok   step:atss" in proc.stdout and "all checks passed" in proc.stdout
