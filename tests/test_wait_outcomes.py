"""--wait judges a run that somebody else queued by the attempt that queued it (its manifest entry),
never by an older row: a --force submission whose job died must not read as done."""

from __future__ import annotations

import json

from harness.launch.manifest import update_manifest
from harness.launch.wait import outcomes_of
from harness.rows import row_path


def queue(results, run_id: str, attempt: str | None, executor: str = "local") -> None:
    def add(manifest: dict) -> None:
        manifest["runs"][run_id] = {"detector": "atss", "loss": "rs", "seed": 0, "executor": executor,
                                    "job_id": None, "attempt": attempt}

    update_manifest(results, add)


def write_row(results, run_id: str, attempt: str) -> None:
    path = row_path(results, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "status": "done", "provenance": {"attempt": attempt}}))


def test_an_older_row_is_not_the_outcome_of_a_later_attempt_queued_elsewhere(tmp_path):
    write_row(tmp_path, "a", "first")
    queue(tmp_path, "a", "forced")  # queued again with --force by another invocation, which then died
    state, reason = outcomes_of(tmp_path, {"a": None})["a"]
    assert state == "failed" and "older attempt's" in reason, reason
    write_row(tmp_path, "a", "forced")  # that attempt's own row
    assert outcomes_of(tmp_path, {"a": None})["a"] == ("done", "")


def test_without_an_attempt_in_the_manifest_the_row_decides(tmp_path):
    write_row(tmp_path, "b", "first")
    queue(tmp_path, "b", None)
    assert outcomes_of(tmp_path, {"b": None})["b"] == ("done", "")


def test_status_says_when_a_done_row_is_older_than_the_runs_latest_submission(tmp_path):
    from harness.launch.status import experiment_status

    write_row(tmp_path, "a", "first")
    queue(tmp_path, "a", "forced")
    (st,), _ = experiment_status(tmp_path)
    # (a hand-made row has no fingerprint: stale for that, which is said too)
    assert "ended without a row: this row is an earlier attempt's" in st.reason, st
    write_row(tmp_path, "a", "forced")
    (st,), _ = experiment_status(tmp_path)
    assert "earlier attempt" not in st.reason, st
