"""A loss added by a user trains on every executor, and every filter reaches every executor.

The worked example (examples/quality_focal.py, loss ``qfl``) is named in a spec by its *relative* path,
as a user writes it; each test runs ``harness run`` as a user does, in a fresh process, and reads the
rows it leaves: the local executor (waiting, and in the background with ``--only`` / ``--force``), a
two-task run on CPU (gloo), and the loopback SLURM cluster. A loss module that cannot be imported in the
job's process fails the run before training, the reason in its row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from cli import harness
from harness.rows import read_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def write_spec(folder: Path, name: str, *, losses=("focal", "qfl"), modules=None, launch=None) -> Path:
    if modules is None:  # relative to the spec file's folder, where harness reads a relative path from
        modules = (os.path.relpath(REPO / "examples" / "quality_focal.py", folder),)
    data = {
        "name": name,
        "loss_modules": list(modules),
        "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8},
        "profile": "tiny",
        "detectors": ["atss"],
        "losses": list(losses),
        "schedule": {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2},
        "launch": {"cluster": "local", "cpus_per_run": 1, "time_min": 20, "array_parallelism": 2, **(launch or {})},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rows_by_loss(results: Path) -> dict[str, dict]:
    rows, corrupt = read_rows(results, warn=False)
    assert not corrupt
    return {r["loss"]: r for r in rows}


def wait_for_rows(results: Path, losses: set[str], timeout_s: float = 600) -> dict[str, dict]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = rows_by_loss(results)
        if losses <= set(rows):
            return rows
        time.sleep(2)
    log = results / "local-pool.log"
    raise AssertionError(f"no rows for {losses} after {timeout_s} s; pool log:\n"
                         f"{log.read_text()[-3000:] if log.exists() else '(none)'}")


def test_the_example_loss_trains_through_the_local_executor(tmp_path):
    spec = write_spec(tmp_path, "local_qfl")
    proc = harness("run", str(spec), "--executor", "local", "--wait", "--only", "atss:qfl",
                   "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = rows_by_loss(tmp_path / "results" / "local_qfl")
    assert set(rows) == {"qfl"}, "--only atss:qfl ran another cell"
    assert rows["qfl"]["status"] == "done", rows["qfl"].get("reason")
    assert "bbox_AP" in rows["qfl"]["metrics"]


def test_the_example_loss_trains_in_every_task_of_a_two_process_run(tmp_path):
    spec = write_spec(tmp_path, "ddp_qfl", losses=("qfl",), launch={"cpus_per_run": 2, "tasks_per_run": 2})
    proc = harness("run", str(spec), "--executor", "local", "--wait", "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    row = rows_by_loss(tmp_path / "results" / "ddp_qfl")["qfl"]
    assert row["status"] == "done", row.get("reason")
    assert row["provenance"]["world_size"] == 2


def test_the_example_loss_trains_through_slurm(slurm_cluster, tmp_path):
    spec = write_spec(tmp_path, "slurm_qfl", losses=("qfl",))
    proc = harness("run", str(spec), "--executor", "slurm", "--wait", "--timeout", "10",
                   "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    row = rows_by_loss(tmp_path / "results" / "slurm_qfl")["qfl"]
    assert row["status"] == "done", row.get("reason")
    assert row["provenance"]["job_id"]  # it ran as a SLURM job


def test_only_and_force_reach_the_background_pool(tmp_path):
    spec = write_spec(tmp_path, "bg_qfl")
    results = tmp_path / "results"
    proc = harness("run", str(spec), "--executor", "local", "--only", "atss:qfl", "--results", str(results), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "in the background" in proc.stdout
    first = wait_for_rows(results / "bg_qfl", {"qfl"})
    assert first["qfl"]["status"] == "done", first["qfl"].get("reason")
    time.sleep(5)  # the pool has finished its only run: no other cell may appear
    assert set(rows_by_loss(results / "bg_qfl")) == {"qfl"}
    stamp = first["qfl"]["provenance"]["finished_at"]
    time.sleep(1.1)  # finished_at has a resolution of one second
    proc = harness("run", str(spec), "--executor", "local", "--only", "atss:qfl", "--force", "--results", str(results),
                   timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    deadline = time.time() + 600
    while time.time() < deadline:
        row = rows_by_loss(results / "bg_qfl").get("qfl")
        if row and row["provenance"]["finished_at"] != stamp:
            break
        time.sleep(2)
    else:
        raise AssertionError("--force did not reach the background pool: the qfl run was not redone")
    assert set(rows_by_loss(results / "bg_qfl")) == {"qfl"}


def test_a_loss_module_that_cannot_be_imported_in_the_job_fails_the_run_before_training(tmp_path):
    """Importable where the spec is read, not in the job's process (say, a package missing on the nodes)."""
    module = tmp_path / "node_only_loss.py"
    example = (REPO / "examples" / "quality_focal.py").read_text().replace('name="qfl"', 'name="node_only"')
    module.write_text(example + "\nimport os\n\n"
                      "if os.environ.get('SUBMITIT_LOCAL_JOB_ID') or os.environ.get('HARNESS_LOCAL_RUN'):  # inside a local job\n"
                      "    raise ImportError('fancy_ops is not installed on this node')\n")
    spec = write_spec(tmp_path, "broken", losses=("node_only",), modules=(str(module),))
    proc = harness("run", str(spec), "--executor", "local", "--wait", "--results", str(tmp_path / "results"))
    assert proc.returncode == 1
    row = rows_by_loss(tmp_path / "results" / "broken")["node_only"]
    assert row["status"] == "failed"
    assert "cannot be imported here" in row["reason"] and "fancy_ops" in row["reason"]
    assert "before training" in row["reason"] and row["curve"] == []
    assert row["metrics"] == {}
