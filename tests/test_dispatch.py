"""`harness run` / `harness status` on this machine: rows written once, reruns skip finished work,
failed runs say why, a killed driver leaves nothing half-done. Real (tiny) mmdet training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from cli import harness as run_cli
from harness.cli import main
from harness.rows import read_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def spec_file(tmp_path, name="smoke", **overrides):
    data = {
        "name": name,
        "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8},
        "profile": "tiny",
        "detectors": ["atss"],
        "losses": ["focal", "rs"],
        "schedule": {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2},
        "launch": {"executor": "local", "cpus_per_run": 1, "time_min": 20},
    }
    data.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_writes_rows_and_reruns_skip_done_cells(tmp_path):
    spec = spec_file(tmp_path)
    results = tmp_path / "results"
    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, corrupt = read_rows(results / "smoke")
    assert not corrupt and sorted(r["loss"] for r in rows) == ["focal", "rs"]
    for row in rows:
        assert row["status"] == "done" and "bbox_AP" in row["metrics"]
        prov = row["provenance"]
        # 2 images x 2 accumulated: the tiny recipe's total batch 4
        assert prov["effective_batch"] == 4 and prov["accumulate"] == 2 and prov["batch_per_process"] == 2
        assert prov["git_commit"] and prov["versions"]["mmdet"] == "3.3.0"
        assert prov["job_id"] and prov["wall_time_s"] > 0
        # when it finished, with the UTC offset: rows of nodes in other time zones order by the instant
        assert datetime.fromisoformat(prov["finished_at"]).utcoffset() is not None, prov["finished_at"]
    # each run (both in this one debug process) logged into its own work folder, not the first run's
    for row in rows:
        logs = list((results / "smoke" / "work" / row["run_id"]).glob("*/vis_data/scalars.json"))
        assert len(logs) == 1 and logs[0].read_text(), (row["run_id"], logs)
    mtimes = {p: p.stat().st_mtime_ns for p in (results / "smoke" / "runs").glob("*.json")}

    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results), "--dry-run")
    assert "0 to run, 2 already done" in proc.stdout
    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 0 and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing redone

    proc = run_cli("status", str(results / "smoke"))
    assert proc.returncode == 0 and "2 done" in proc.stdout

    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results), "--force", "--only", "atss:rs")
    assert proc.returncode == 0
    changed = [p.name for p, t in mtimes.items() if p.stat().st_mtime_ns != t]
    assert len(changed) == 1 and changed[0].startswith("atss-rs-")


def test_a_nan_loss_fails_the_run_with_the_reason(tmp_path):
    spec = spec_file(tmp_path, name="diverge", losses=["focal"],
                     schedule={"epochs": 1, "max_iters_per_epoch": 3, "batch_per_gpu": 2, "lr": 1e12})
    results = tmp_path / "results"
    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 1
    (row,), _ = read_rows(results / "diverge")
    assert row["status"] == "failed" and "non-finite loss at iteration" in row["reason"]
    status = run_cli("status", str(results / "diverge"))
    assert "failed" in status.stdout and "non-finite loss" in status.stdout
    assert status.returncode == 1  # a failed run of the spec: status says so in its exit code too


def test_val_every_validates_every_k_epochs_and_at_the_last_into_the_rows_val_curve(tmp_path):
    spec = spec_file(tmp_path, name="val", losses=["rs"],
                     schedule={"epochs": 3, "max_iters_per_epoch": 2, "batch_per_gpu": 2, "val_every": 2})
    results = tmp_path / "results"
    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,), _ = read_rows(results / "val")
    assert row["status"] == "done"
    assert [(v["epoch"], v["iteration"]) for v in row["val_curve"]] == [(2, 4), (3, 6)]
    assert all(isinstance(v["metrics"]["bbox_AP"], float) for v in row["val_curve"])
    # the last validation saw the final model on the same split as the final evaluation
    assert row["val_curve"][-1]["metrics"]["bbox_AP"] == pytest.approx(row["metrics"]["bbox_AP"])
    smoke = spec_file(tmp_path, name="noval", losses=["rs"])
    assert run_cli("run", str(smoke), "--executor", "debug", "--results", str(results)).returncode == 0
    (plain,), _ = read_rows(results / "noval")
    assert plain["status"] == "done" and "val_curve" not in plain


def test_a_two_process_run_trains_distributed_on_this_machine(tmp_path):
    """The local executor starts a run of tasks_per_run 2 as one job of two tasks (gloo on CPU)."""
    spec = spec_file(tmp_path, name="ddp", losses=["rs"],
                     launch={"executor": "local", "cpus_per_run": 2, "tasks_per_run": 2, "time_min": 20})
    results = tmp_path / "results"
    proc = run_cli("run", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 2 and "--executor debug runs one process per run" in proc.stderr
    proc = run_cli("run", str(spec), "--executor", "local", "--wait", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished atss-rs-" in proc.stderr and " done (1/1)" in proc.stderr
    (row,), _ = read_rows(results / "ddp")
    assert row["status"] == "done" and row["provenance"]["world_size"] == 2
    assert row["provenance"]["effective_batch"] == 4 and row["provenance"]["num_train_images"] == 8


def test_bad_spec_is_a_usage_error(tmp_path):
    spec = spec_file(tmp_path, detectors=["atts"])
    proc = run_cli("run", str(spec), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "did you mean 'atss'" in proc.stderr


def test_sigkill_of_the_driver_then_rerun_completes_without_duplicates(tmp_path):
    spec = spec_file(tmp_path, name="killed", schedule={"epochs": 2, "max_iters_per_epoch": 2, "batch_per_gpu": 2})
    results = tmp_path / "results"
    driver = subprocess.Popen([sys.executable, "-m", "harness", "run", str(spec), "--executor", "local", "--wait",
                               "--results", str(results)], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    work = results / "killed" / "work"
    deadline = time.time() + 300
    while time.time() < deadline and not list(work.glob("*/state.json")):
        time.sleep(0.5)
    assert list(work.glob("*/state.json")), "no run started within 300 s"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and every job it started, mid-run
    driver.wait(timeout=30)
    proc = run_cli("run", str(spec), "--executor", "local", "--wait", "--results", str(results), "--timeout", "12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, corrupt = read_rows(results / "killed")
    assert not corrupt and sorted(r["loss"] for r in rows) == ["focal", "rs"]
    assert all(r["status"] == "done" for r in rows)
    leftovers = [p.name for p in (results / "killed" / "runs").iterdir() if p.suffix != ".json"]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_benchmark_runs_and_prints_the_tables(tmp_path):
    spec = spec_file(tmp_path, name="bench", losses=["rs"])
    results = tmp_path / "results"
    proc = run_cli("benchmark", str(spec), "--executor", "debug", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,), _ = read_rows(results / "bench")  # a failed run also makes a table line and its files
    assert row["status"] == "done" and isinstance(row["metrics"]["bbox_AP"], float)
    ap_line = next(line for line in proc.stdout.splitlines() if line.startswith("| ATSS |"))
    assert f"{100 * row['metrics']['bbox_AP']:.1f} (1)" in ap_line and "written:" in proc.stdout
    assert (results / "bench" / "tables" / "grid_bbox_AP.tex").exists()
    assert (results / "bench" / "plots" / "seeds_bbox_AP.png").exists()
    again = run_cli("benchmark", str(spec), "--executor", "debug", "--results", str(results))
    assert "0 to run, 1 already done" in again.stdout
