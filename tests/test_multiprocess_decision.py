"""A run of two processes (tasks_per_run: 2, gloo on CPU, submitit's LocalExecutor) decides once: rank 0
takes the lock and decides, rank 1 follows before it reads anything. A done run and a run locked by
another process end at once in both ranks (rank 1 never waits in init_process_group for a rank 0 that
stepped aside); ``--force`` deletes the old checkpoints before either rank could resume from them."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import yaml

from harness.experiments.spec import load_spec
from harness.rows import read_rows, write_row
from harness.run.job import RunJob, new_attempt, row_identity, work_dir

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def two_process_spec(tmp_path: Path) -> Path:
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ddp", "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8}, "profile": "tiny",
        "detectors": ["atss"], "losses": ["rs"], "schedule": {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2},
        "launch": {"executor": "local", "cpus_per_run": 2, "tasks_per_run": 2, "time_min": 20}}))
    return path


def run_two_tasks(run, results: Path, timeout_s: float = 90) -> list[dict]:
    """Submit the run as one local job of two tasks; both tasks' results, or fail when it hangs."""
    executor = submitit.LocalExecutor(folder=results / "local" / "%j")
    executor.update_parameters(timeout_min=5, tasks_per_node=2)
    job = executor.submit(RunJob(run, results, attempt=new_attempt()))
    deadline = time.time() + timeout_s
    while not job.done() and time.time() < deadline:
        time.sleep(0.5)
    if not job.done():
        job.cancel()
        pytest.fail(f"the two tasks did not end within {timeout_s:.0f} s (a rank waiting for a partner)")
    return job.results()


def test_a_done_run_ends_at_once_in_every_rank(tmp_path):
    (run,) = load_spec(two_process_spec(tmp_path)).runs()
    results = tmp_path / "results" / "ddp"
    write_row(results, {**row_identity(run), "status": "done", "metrics": {"bbox_AP": 0.5}, "curve": [],
                        "provenance": {"attempt": "older"}})
    rank0, rank1 = run_two_tasks(run, results)
    assert rank0["status"] == "done" and rank0["provenance"]["attempt"] == "older"
    assert rank1 == {"run_id": run.run_id, "status": "secondary task", "decision": "skip", "reason": "already done"}


HOLD_RUN_LOCK = """
import sys, time
from pathlib import Path
from harness.run.job import RunLock
assert RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(300)
"""


def test_a_run_locked_elsewhere_ends_at_once_in_every_rank(tmp_path):
    (run,) = load_spec(two_process_spec(tmp_path)).runs()
    results = tmp_path / "results" / "ddp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(work_dir(results, run.run_id))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rank0, rank1 = run_two_tasks(run, results)
    finally:
        holder.kill()
        holder.wait()
    assert rank0["status"] == "skipped" and rank1["decision"] == "skip"
    assert rank1["reason"] == "another process is running it" and read_rows(results) == ([], [])


def test_force_restarts_both_ranks_from_scratch_never_from_the_old_checkpoints(tmp_path):
    spec = two_process_spec(tmp_path)
    (run,) = load_spec(spec).runs()
    results = tmp_path / "results"
    folder = work_dir(results / "ddp", run.run_id)
    folder.mkdir(parents=True)
    # checkpoints no rank can load: a rank resuming from them fails the run
    (folder / "epoch_1.pth").write_bytes(b"not a checkpoint")
    (folder / "last_checkpoint").write_text(str(folder / "epoch_1.pth"))
    write_row(results / "ddp", {**row_identity(run), "status": "done", "metrics": {"bbox_AP": 0.5}, "curve": [],
                                "provenance": {"attempt": "older"}})
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--executor", "local", "--wait",
                           "--force", "--results", str(results)], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,), _ = read_rows(results / "ddp")
    assert row["status"] == "done" and row["provenance"]["attempt"] != "older" and row["provenance"]["world_size"] == 2
    outcomes = [pickle.loads(p.read_bytes())[1] for p in sorted((results / "ddp" / "local").glob("*/*_result.pkl"))]
    assert [o["status"] for o in outcomes] == ["done", "secondary task"] and outcomes[1]["decision"] == "restart"
