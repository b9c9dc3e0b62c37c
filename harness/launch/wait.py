"""Waiting (``--wait``): for the runs this invocation submitted, and for those it found queued or running
elsewhere, until none is queued or running any more; then each one's outcome.

A run submitted here is judged by its own attempt only (its row, or its rank 0's decision to step aside;
:func:`harness.run.job.attempt_outcome`), never by an older row; one that ended with neither failed, with
SLURM's word for how its job ended. A run that was somebody else's is judged by the attempt that queued
it (its manifest entry's) in the same way, or by the row it left where the manifest names no attempt.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping

from harness.launch.manifest import read_manifest
from harness.launch.scheduler import live_runs, slurm_states
from harness.rows import row_path
from harness.run.job import attempt_outcome


def _row_outcome(results_dir: Path, run_id: str) -> tuple[str, str] | None:
    try:
        row = json.loads(row_path(results_dir, run_id).read_text())
        return row.get("status", "?"), row.get("reason") or ""
    except (OSError, ValueError):
        return None


def outcomes_of(results_dir: Path, watched: Mapping[str, str | None]) -> dict[str, tuple[str, str]]:
    """(state, reason) of every watched run that is no longer queued or running (``watched``: run id →
    the attempt submitted here, None for a run that was somebody else's)."""
    entries = read_manifest(results_dir)["runs"]
    out: dict[str, tuple[str, str]] = {}
    ended_jobs = {}
    for run_id, attempt in watched.items():
        entry = entries.get(run_id, {})
        # somebody else's run is judged by the attempt that queued it (the manifest's), when it says one:
        # a row older than that attempt (say it was queued with --force and its job died) is not its outcome
        attempt = attempt or entry.get("attempt")
        own = attempt_outcome(results_dir, run_id, attempt) if attempt else _row_outcome(results_dir, run_id)
        if own is not None:
            out[run_id] = own
            continue
        if entry.get("executor") == "slurm" and entry.get("job_id"):
            ended_jobs[run_id] = str(entry["job_id"])
        else:
            older = " (the row there is an older attempt's)" if _row_outcome(results_dir, run_id) else ""
            out[run_id] = ("failed", f"its process ended without a row{older}")
    states = slurm_states(sorted(set(ended_jobs.values())))
    for run_id, job_id in ended_jobs.items():
        state = states[job_id].state if job_id in states else "UNKNOWN"
        older = " (the row there is an older attempt's)" if _row_outcome(results_dir, run_id) else ""
        out[run_id] = ("failed", f"SLURM job {job_id} ended {state} without a row{older}")
    return out


def wait_for(results_dir: Path, watched: Mapping[str, str | None], timeout_s: float | None,
             log: Callable[[str], None] = print, poll_s: float = 2.0) -> tuple[bool, dict[str, tuple[str, str]]]:
    """Block until no watched run is queued or running, with a progress line on each change. Returns
    (every watched run ended, the outcome of each that ended)."""
    start, last = time.time(), None
    while True:
        live = live_runs(results_dir, watched)
        ended = outcomes_of(results_dir, {k: v for k, v in watched.items() if k not in live})
        counts = {s: sum(o[0] == s for o in ended.values()) for s in ("done", "failed", "skipped")}
        running = sum(lv.state == "running" for lv in live.values())
        line = (f"{counts['done']}/{len(watched)} done, {counts['failed']} failed, {running} running, "
                f"{len(live) - running} queued" + (f", {counts['skipped']} stepped aside" if counts["skipped"] else ""))
        if line != last:
            log(line)
            last = line
        if not live:
            return True, ended
        if timeout_s is not None and time.time() - start > timeout_s:
            log(f"timed out after {timeout_s:.0f} s: {line}")
            return False, ended
        time.sleep(poll_s)
