"""RunJob's bookkeeping around a run, with training replaced by a stand-in (no mmdet here)."""

from __future__ import annotations

import pytest
import yaml

import harness.run.train as train
from harness.experiments.spec import load_spec
from harness.run.job import RunJob
from harness.rows import read_rows


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"name": "job", "dataset": {"kind": "synthetic"}, "detectors": ["atss"],
                                    "losses": ["rs"], "launch": {"executor": "local"}}))
    (run,) = load_spec(path).runs()
    return run


def test_an_exception_in_training_fails_the_run_with_the_reason(run, tmp_path, monkeypatch):
    def broken(spec, folder):
        raise ValueError("the data is wrong")

    monkeypatch.setattr(train, "train_and_evaluate", broken)
    row = RunJob(run, tmp_path / "results")()
    assert row["status"] == "failed" and row["reason"] == "ValueError: the data is wrong"
    (stored,), _ = read_rows(tmp_path / "results")
    assert stored["status"] == "failed" and "ValueError" in stored["traceback"]


def test_whatever_is_raised_after_preemption_is_not_recorded_as_a_failure(run, tmp_path, monkeypatch):
    """submitit's USR2 handler calls checkpoint(), requeues, then raises SystemExit from wherever the run
    is; mmengine's config formatting (at every checkpoint save) turns that into a SyntaxError."""
    job = RunJob(run, tmp_path / "results")

    def preempted_while_saving(spec, folder):
        resubmission = job.checkpoint()
        assert isinstance(resubmission.function, RunJob) and resubmission.function is not job
        raise SyntaxError("Failed to format the config file")

    monkeypatch.setattr(train, "train_and_evaluate", preempted_while_saving)
    with pytest.raises(SystemExit):
        job()
    rows, corrupt = read_rows(tmp_path / "results")
    assert rows == [] and corrupt == []
    # the requeued instance starts clean and runs the job normally
    monkeypatch.setattr(train, "train_and_evaluate", lambda spec, folder: train.TrainResult({"bbox_AP": 0.5}, []))
    row = job.checkpoint().function()
    assert row["status"] == "done" and row["metrics"] == {"bbox_AP": 0.5}


def test_a_keyboard_interrupt_is_not_recorded_as_a_failure(run, tmp_path, monkeypatch):
    def interrupted(spec, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_and_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        RunJob(run, tmp_path / "results")()
    assert read_rows(tmp_path / "results") == ([], [])
