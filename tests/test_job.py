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


def test_force_restarts_once_per_attempt_and_a_requeue_of_that_attempt_resumes(run, tmp_path, monkeypatch):
    """SLURM requeues a job after a node failure by reloading it as submitted (force still set, since
    submitit's checkpoint() never ran): that start resumes what the forced restart trained; a new
    submission with --force restarts again."""
    from harness.rows import write_row
    from harness.run.job import row_identity, work_dir

    results = tmp_path / "results"
    folder = work_dir(results, run.run_id)
    folder.mkdir(parents=True)
    (folder / "last_checkpoint").write_text("epoch_1.pth")  # the old run's checkpoint
    write_row(results, {**row_identity(run), "status": "done", "metrics": {"bbox_AP": 0.1}, "curve": [],
                        "provenance": {"attempt": "older"}})
    resumed: list[bool] = []

    def node_fails_after_epoch_1(spec, folder):
        resumed.append((folder / "last_checkpoint").exists())
        (folder / "last_checkpoint").write_text("epoch_1.pth")  # this attempt's checkpoint
        raise KeyboardInterrupt  # the process dies: no row, nothing else runs

    monkeypatch.setattr(train, "train_and_evaluate", node_fails_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        RunJob(run, results, force=True, attempt="a1")()
    assert resumed == [False] and read_rows(results) == ([], [])  # restarted from scratch: old row gone

    def finishes(spec, folder):
        resumed.append((folder / "last_checkpoint").exists())
        return train.TrainResult({"bbox_AP": 0.5}, [])

    monkeypatch.setattr(train, "train_and_evaluate", finishes)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    row = RunJob(run, results, force=True, attempt="a1")()  # the requeue: the job as submitted, force and all
    assert resumed == [False, True] and row["status"] == "done" and row["provenance"]["attempt"] == "a1"

    row = RunJob(run, results, force=True, attempt="a2")()  # another submission's --force restarts again
    assert resumed == [False, True, False] and row["provenance"]["attempt"] == "a2"


def test_a_preemption_signal_during_a_checkpoint_save_is_handled_once_the_save_is_done():
    """submitit's USR2 handler (checkpoint and requeue) does not run in the middle of a checkpoint save:
    the signal is held back until the save returns, then handled before the next step."""
    import os
    import signal
    import time

    from harness.run.train import _whole

    order = []

    class Runner:
        def save_checkpoint(self):
            os.kill(os.getpid(), signal.SIGUSR2)  # the scheduler preempts the job mid-save
            time.sleep(0.05)  # a handler that is not held back runs here
            order.append("saved")

    def handler(signum, frame):
        order.append("handled")

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        runner = Runner()
        _whole(runner, "save_checkpoint")
        runner.save_checkpoint()
        order.append("next step")
        assert signal.getsignal(signal.SIGUSR2) is handler  # the job's handler is back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert order == ["saved", "handled", "next step"]
