"""A run resumed after the code changed is never recorded as if one version trained it: each start of a
run records the fingerprint it trained under (``work/<run_id>/starts.json``), the row names every start
that trained it (``provenance.starts``, ``provenance.resumes``) and the fingerprints of the earlier ones
that differ (``fingerprint.resumed_from``), and such a row is stale, saying what changed between its
starts; ``--rerun-stale`` / ``--force`` start over with a clean record.

Real tiny runs (ATSS × RS, 2 epochs of one iteration, synthetic data), preempted after epoch 1 as the
rehearsal does (``HARNESS_INTERRUPT_AFTER_EPOCH``). "The code changed" is simulated without touching the
repository: in this process by changing the code state the fingerprint module loaded, through the
command line by running a copy of ``harness/`` in a git repository of its own and committing an edit
there."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.experiments.spec import load_spec
from harness.rows import read_rows
from harness.run import fingerprint as fpm
from harness.run.hooks import Interrupted
from harness.run.job import RunJob, work_dir

STARTS_FILE = "starts.json"  # harness.run.job.STARTS_FILE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8}, "profile": "tiny",
        "detectors": ["atss"], "losses": ["rs"], "schedule": {"epochs": 2, "max_iters_per_epoch": 1, "batch_per_gpu": 2},
        "launch": {"executor": "debug", "cpus_per_run": 1, "time_min": 20}}))
    return path


def call(job: RunJob) -> dict:
    """The job, as a process of its own would run it. mmengine keeps one visualizer per name in a process
    and mmdet names it "visualizer", so a later Runner here would write into the first one's folder, which
    --force deletes (:mod:`harness.bench.phases` names each its own): each job here builds its own."""
    from mmdet.visualization import DetLocalVisualizer

    DetLocalVisualizer._instance_dict.pop("visualizer", None)
    return job()


def interrupted_after_epoch_1(job: RunJob, monkeypatch) -> None:
    with monkeypatch.context() as m:
        m.setenv("HARNESS_INTERRUPT_AFTER_EPOCH", "1")
        with pytest.raises(Interrupted):
            call(job)


def other_code(commit: str) -> dict:
    """The code state of a process that loaded another commit of harness/."""
    code = copy.deepcopy(fpm.LOADED)
    code["git_commit"], code["harness_tree"] = commit, "e" * 40
    return code


def the_row(results: Path) -> dict:
    (row,), corrupt = read_rows(results)
    assert not corrupt
    return row


def test_a_run_resumed_under_other_code_is_stale_and_rerun_stale_starts_it_over_clean(tmp_path, monkeypatch):
    (run,) = load_spec(spec_file(tmp_path)).runs()
    results = tmp_path / "results" / "tiny"
    folder = work_dir(results, run.run_id)
    loaded = fpm.LOADED

    # preempted after epoch 1; the code changes before the next start (a requeued job importing a checkout
    # after `git pull`), which resumes
    interrupted_after_epoch_1(RunJob(run, results, attempt="a1"), monkeypatch)
    assert read_rows(results) == ([], []) and (folder / "last_checkpoint").exists()
    monkeypatch.setattr(fpm, "LOADED", other_code("b" * 40))
    row = call(RunJob(run, results, attempt="a2"))
    assert row["status"] == "done", row.get("reason")
    was = loaded["git_commit"][:10]
    assert fpm.staleness(row, results, run)[0] == [
        f"resumed under other code: harness code changed (commit {was} -> bbbbbbbbbb) between its starts"]
    prov, fp = row["provenance"], row["fingerprint"]
    assert prov["resumes"] == 1 and [s["attempt"] for s in prov["starts"]] == ["a1", "a2"]
    assert [s["from_iteration"] for s in prov["starts"]] == [0, 1] and prov["starts"][1]["from_epoch"] == 1
    (earlier,) = fp["resumed_from"]
    assert earlier["git_commit"] == loaded["git_commit"] and fp["git_commit"] == "b" * 40
    assert earlier["digest"] == prov["starts"][0]["digest"]
    # its digest is neither code's: no table counts it among the rows of one
    assert fp["digest"] not in (earlier["digest"], prov["starts"][1]["digest"])

    # harness run leaves it alone; --rerun-stale redoes it from scratch, and the new row is clean
    assert call(RunJob(run, results, attempt="a3"))["provenance"]["attempt"] == "a2"
    row = call(RunJob(run, results, attempt="a4", rerun_stale=True))
    assert row["status"] == "done" and row["provenance"]["attempt"] == "a4"
    assert row["provenance"]["resumes"] == 0 and [s["attempt"] for s in row["provenance"]["starts"]] == ["a4"]
    assert row["fingerprint"]["resumed_from"] == [] and fpm.staleness(row, results, run) == ([], "")

    # preempted and resumed under the same code (--force starting over first): one fingerprint, current
    interrupted_after_epoch_1(RunJob(run, results, force=True, attempt="a5"), monkeypatch)
    assert [s["attempt"] for s in json.loads((folder / STARTS_FILE).read_text())["starts"]] == ["a5"]
    row = call(RunJob(run, results, attempt="a6"))
    prov, fp = row["provenance"], row["fingerprint"]
    assert prov["resumes"] == 1 and [s["attempt"] for s in prov["starts"]] == ["a5", "a6"]
    assert prov["starts"][0]["digest"] == prov["starts"][1]["digest"] == fp["digest"]  # the rehearsal's hook aside
    assert fp["resumed_from"] == [] and fpm.staleness(row, results, run) == ([], "")


def test_a_checkpoint_no_recorded_start_made_makes_the_row_stale(tmp_path, monkeypatch):
    """A run interrupted by a harness from before the record (or whose record was lost) and resumed now:
    what trained its first epochs is unknown, so the row does not pass for this code's."""
    (run,) = load_spec(spec_file(tmp_path)).runs()
    results = tmp_path / "results" / "tiny"
    interrupted_after_epoch_1(RunJob(run, results, attempt="a1"), monkeypatch)
    (work_dir(results, run.run_id) / STARTS_FILE).unlink()
    row = call(RunJob(run, results, attempt="a2"))
    assert row["status"] == "done" and row["provenance"]["resumes"] == 1
    assert [s["digest"] is None for s in row["provenance"]["starts"]] == [True, False]
    assert fpm.staleness(row, results, run)[0] == [
        "resumed from a checkpoint whose code was not recorded (its first start left no record)"]


# ------------------------------------------------------------------------------------------------
# Through the command line, the code edited in a copy of harness/ with a git history of its own


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def harness_in(checkout: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=checkout, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HARNESS_DATA_DIR": str(REPO / "data"), **(env or {})})


def test_editing_the_code_between_two_starts_of_a_run_makes_it_stale_in_harness_status(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "harness", checkout / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "--quiet", cwd=checkout)
    git("add", "harness", cwd=checkout)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "a", cwd=checkout)
    before = git("rev-parse", "HEAD", cwd=checkout)
    spec, results = spec_file(tmp_path), tmp_path / "results"
    args = ("run", str(spec), "--executor", "debug", "--results", str(results))

    proc = harness_in(checkout, *args, env={"HARNESS_INTERRUPT_AFTER_EPOCH": "1"})
    assert "interrupted after epoch 1" in proc.stderr and read_rows(results / "tiny") == ([], [])

    loss = checkout / "harness" / "losses" / "rank_sort.py"
    loss.write_text(loss.read_text() + "\n# edited between the two starts\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-am", "b", cwd=checkout)
    after = git("rev-parse", "HEAD", cwd=checkout)
    proc = harness_in(checkout, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Auto resumed" in proc.stdout + proc.stderr

    status = harness_in(checkout, "status", str(results / "tiny"))
    reason = f"resumed under other code: harness code changed (commit {before[:10]} -> {after[:10]}) between its starts"
    assert any(line.startswith("stale") and reason in line for line in status.stdout.splitlines()), status.stdout
    row = the_row(results / "tiny")
    assert row["status"] == "done" and row["provenance"]["resumes"] == 1
    assert [e["git_commit"] for e in row["fingerprint"]["resumed_from"]] == [before]
    assert row["fingerprint"]["git_commit"] == after

    proc = harness_in(checkout, *args)
    assert proc.returncode == 0 and "1 stale" in proc.stdout and the_row(results / "tiny") == row  # left alone

    proc = harness_in(checkout, *args, "--rerun-stale")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = the_row(results / "tiny")
    assert row["provenance"]["resumes"] == 0 and row["fingerprint"]["resumed_from"] == []
    assert row["fingerprint"]["git_commit"] == after
    status = harness_in(checkout, "status", str(results / "tiny"))
    assert status.stdout.startswith("done") and "1 done" in status.stdout, status.stdout
    assert json.loads((work_dir(results / "tiny", row["run_id"]) / STARTS_FILE).read_text())["starts"][0][
        "attempt"] == row["provenance"]["attempt"]


def test_rerun_stale_starts_an_interrupted_run_over_when_other_code_trained_its_checkpoint(tmp_path, monkeypatch):
    """A run interrupted under one code and started again with --rerun-stale under another is not resumed
    (its row would be stale at once) but started over; under the same code it resumes."""
    (run,) = load_spec(spec_file(tmp_path)).runs()
    results = tmp_path / "results" / "tiny"
    interrupted_after_epoch_1(RunJob(run, results, attempt="a1"), monkeypatch)
    row = None
    with monkeypatch.context() as m:
        m.setattr(fpm, "LOADED", other_code("c" * 40))
        row = call(RunJob(run, results, attempt="a2", rerun_stale=True))
        assert row["status"] == "done" and row["provenance"]["resumes"] == 0
        assert [s["attempt"] for s in row["provenance"]["starts"]] == ["a2"]
        assert fpm.staleness(row, results, run)[0] == []
    # the same code: --rerun-stale resumes what it trained
    interrupted_after_epoch_1(RunJob(run, results, force=True, attempt="a3"), monkeypatch)
    row = call(RunJob(run, results, attempt="a4", rerun_stale=True))
    assert row["provenance"]["resumes"] == 1 and [s["attempt"] for s in row["provenance"]["starts"]] == ["a3", "a4"]
