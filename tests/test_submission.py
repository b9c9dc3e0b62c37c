"""Submitting once: the manifest changed under a lock by concurrent processes, runs queued on SLURM or in
a live local pool left out of the plan, one decision per run launch that every rank follows, and a
run's outcome taken from its own attempt only. No training here (stand-ins); the real runs are in
tests/test_local_pool.py, tests/test_multiprocess_decision.py and tests/test_slurm_runs.py."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time

import pytest
import yaml

import harness.launch.manifest as manifest_mod
import harness.run.job as job_mod
import harness.run.train as train
from harness.experiments.spec import load_spec
from harness.launch import scheduler
from harness.launch.manifest import read_manifest, record_ended, record_submission, update_manifest
from harness.launch.plan import make_plan
from harness.rows import read_rows, write_row
from harness.run.job import RunJob, attempt_outcome, decision_key, new_attempt, read_decision, row_identity, work_dir


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "sub.yaml"
    path.write_text(yaml.safe_dump({"name": "sub", "dataset": {"kind": "synthetic"}, "detectors": ["atss"],
                                    "losses": ["focal", "rs"], "launch": {"executor": "local"}}))
    return load_spec(path)


# -- the manifest under a lock ------------------------------------------------------------------------


def _add_entries(results_dir: str, writer: int, n: int) -> None:
    for i in range(n):
        def add(manifest, key=f"w{writer}-{i}"):
            time.sleep(0.005)  # between the read and the write: where an unlocked writer loses others' entries
            manifest["runs"][key] = {"writer": writer}

        update_manifest(results_dir, add)


def test_concurrent_writers_lose_no_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_entries, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(read_manifest(tmp_path)["runs"]) == sorted(f"w{w}-{i}" for w in range(4) for i in range(15))


# -- the plan asks the queues -------------------------------------------------------------------------


def test_a_slurm_job_pending_or_held_is_queued_and_not_submitted_again(spec, tmp_path, monkeypatch):
    focal, rs = spec.runs()
    record_submission(tmp_path, spec, "slurm", {focal.run_id: "77_0", rs.run_id: "77_1"}, attempt="a1")
    answers = {"77_0": scheduler.JobState("PENDING", "JobHeldUser"), "77_1": scheduler.JobState("RUNNING")}
    asked = []
    monkeypatch.setattr(scheduler, "slurm_states", lambda ids: asked.append(ids) or answers)
    plan = make_plan(spec, tmp_path)
    assert [r.run_id for r in plan.queued] == [focal.run_id] and [r.run_id for r in plan.running] == [rs.run_id]
    assert plan.submit == [] and plan.summary() == "0 to run, 0 already done, 1 queued, 1 running"
    assert "JobHeldUser" in plan.where[focal.run_id] and asked == [["77_0", "77_1"]]
    assert make_plan(spec, tmp_path, force=True).submit == []  # --force never duplicates a queued run
    answers.update({"77_0": scheduler.JobState("COMPLETED"), "77_1": scheduler.JobState("CANCELLED")})
    from harness.run.fingerprint import current  # a done row of this code (without one it would be stale)

    write_row(tmp_path, {**row_identity(focal), "status": "done", "metrics": {}, "curve": [], "provenance": {},
                         "fingerprint": current(focal, tmp_path / "work")})
    plan = make_plan(spec, tmp_path)
    assert [r.run_id for r in plan.done] == [focal.run_id] and [r.run_id for r in plan.submit] == [rs.run_id]


HOLD_POOL_LOCK = """
import sys, time
from harness.launch.scheduler import pool_lock
assert pool_lock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_runs_of_a_live_local_pool_are_queued_until_it_ends_them_or_dies(spec, tmp_path):
    focal, rs = spec.runs()
    pool = subprocess.Popen([sys.executable, "-c", HOLD_POOL_LOCK, str(tmp_path), "p1"], stdout=subprocess.PIPE, text=True)
    try:
        assert pool.stdout.readline().strip() == "held"
        record_submission(tmp_path, spec, "local", {focal.run_id: None, rs.run_id: None}, attempt="a1", pool="p1")
        plan = make_plan(spec, tmp_path)
        assert len(plan.queued) == 2 and plan.submit == [] and plan.where[rs.run_id] == "local pool p1"
        record_ended(tmp_path, focal.run_id, "p1")  # the pool ended it (without a row: it failed to start)
        assert [r.run_id for r in make_plan(spec, tmp_path).submit] == [focal.run_id]
    finally:
        pool.kill()
        pool.wait()
    assert len(make_plan(spec, tmp_path).submit) == 2  # a dead pool queues nothing


# -- one decision per run launch ----------------------------------------------------------------------


def _stand_in(calls):
    def train_and_evaluate(spec, folder):
        calls.append((folder / "last_checkpoint").exists())
        return train.TrainResult({"bbox_AP": 0.5}, [])

    return train_and_evaluate


def test_every_rank_follows_rank_0s_decision_made_before_any_reads(spec, tmp_path, monkeypatch):
    run = spec.runs()[0]
    results = tmp_path / "results"
    calls: list[bool] = []
    monkeypatch.setattr(train, "train_and_evaluate", _stand_in(calls))
    rank = {"now": 0}
    monkeypatch.setattr(job_mod, "_rank", lambda: rank["now"])

    first = new_attempt()
    assert RunJob(run, results, attempt=first)()["status"] == "done"
    assert read_decision(work_dir(results, run.run_id), decision_key(first))["action"] == "train"
    rank["now"] = 1
    assert RunJob(run, results, attempt=first)()["decision"] == "train" and len(calls) == 2

    # done: rank 0 steps aside, and so does every other rank, at once, without training
    again = new_attempt()
    rank["now"] = 0
    assert RunJob(run, results, attempt=again)()["status"] == "done" and len(calls) == 2
    rank["now"] = 1
    follower = RunJob(run, results, attempt=again)()
    assert follower["decision"] == "skip" and follower["reason"] == "already done" and len(calls) == 2
    assert attempt_outcome(results, run.run_id, again) == ("skipped", "already done")

    # locked elsewhere: rank 0 steps aside, its followers too
    other = job_mod.RunLock(work_dir(results, run.run_id))
    subprocess_lock = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(work_dir(results, run.run_id))],
                                       stdout=subprocess.PIPE, text=True)
    try:
        assert subprocess_lock.stdout.readline().strip() == "held" and other.held_elsewhere()
        locked = new_attempt()
        rank["now"] = 0
        assert RunJob(run, results, attempt=locked)()["status"] == "skipped"
        rank["now"] = 1
        assert RunJob(run, results, attempt=locked)()["decision"] == "skip" and len(calls) == 2
    finally:
        subprocess_lock.kill()
        subprocess_lock.wait()

    # --force: rank 0 deletes the checkpoints before deciding, so no rank resumes from them
    (work_dir(results, run.run_id) / "last_checkpoint").write_text("epoch_1.pth")
    forced = new_attempt()
    rank["now"] = 0
    assert RunJob(run, results, force=True, attempt=forced)()["status"] == "done"
    assert read_decision(work_dir(results, run.run_id), decision_key(forced))["action"] == "restart"
    rank["now"] = 1
    assert RunJob(run, results, force=True, attempt=forced)()["decision"] == "restart"
    assert calls[-2:] == [False, False]


HOLD_RUN_LOCK = """
import sys, time
from pathlib import Path
from harness.run.job import RunLock
assert RunLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_rank_never_waits_for_a_rank_0_that_is_not_coming(spec, tmp_path, monkeypatch):
    monkeypatch.setattr(job_mod, "_rank", lambda: 1)
    monkeypatch.setattr(job_mod, "DECISION_WAIT_S", 0.3)
    monkeypatch.setattr(train, "train_and_evaluate", _stand_in([]))
    start = time.time()
    with pytest.raises(RuntimeError, match="made no decision"):
        RunJob(spec.runs()[0], tmp_path, attempt=new_attempt())()
    assert time.time() - start < 5


def test_an_attempt_is_judged_by_its_own_row_never_an_older_one(spec, tmp_path):
    run = spec.runs()[0]
    write_row(tmp_path, {**row_identity(run), "status": "failed", "reason": "an older failure", "metrics": {},
                         "curve": [], "provenance": {"attempt": "older"}})
    assert attempt_outcome(tmp_path, run.run_id, "mine") is None
    assert attempt_outcome(tmp_path, run.run_id, "older") == ("failed", "an older failure")
    (stored,), _ = read_rows(tmp_path)
    assert stored["reason"] == "an older failure"
