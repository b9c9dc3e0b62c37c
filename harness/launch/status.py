"""The state of every run of an experiment, from its rows, manifest, locks and (on SLURM) the queue.

States: ``done``; ``failed`` (with the reason from the row); ``running`` (a live process holds the run's
lock); ``pending`` (submitted, not started: queued in SLURM or in a local pool); ``interrupted``
(started, no row and nobody running it: a rerun resumes it); ``lost`` (submitted, the job ended without
a row); ``missing`` (never submitted). Corrupt row files are listed apart.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.launch.manifest import read_manifest
from harness.rows import CorruptRow, read_rows
from harness.run.job import RunLock, work_dir

STATES = ("done", "failed", "running", "pending", "interrupted", "lost", "missing")
SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUE_HOLD", "REQUEUE_FED"}


@dataclass
class RunStatus:
    run_id: str
    detector: str
    loss: str
    seed: int
    state: str
    reason: str = ""
    job_id: str | None = None


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """State of each SLURM job id (array tasks as ``<array>_<task>``), from squeue then sacct."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    states: dict[str, str] = {}
    try:
        # -r: one line per array task (without it pending tasks fold into one "33_[10-34]" line)
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(sorted(set(job_ids)))],
                             capture_output=True, text=True, timeout=20).stdout
        for line in out.splitlines():
            jid, _, st = line.strip().partition(" ")
            states[jid] = st
        missing = [j for j in job_ids if j not in states]
        if missing and shutil.which("sacct"):
            out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)],
                                 capture_output=True, text=True, timeout=20).stdout
            for line in out.splitlines():
                jid, _, st = line.partition("|")
                states.setdefault(jid, st.split()[0] if st else "UNKNOWN")
    except (OSError, subprocess.SubprocessError):
        pass
    return states


def experiment_status(results_dir: str | Path, spec=None) -> tuple[list[RunStatus], list[CorruptRow]]:
    results_dir = Path(results_dir)
    rows, corrupt = read_rows(results_dir, warn=False)
    by_id = {r["run_id"]: r for r in rows}
    known: dict[str, dict] = dict(read_manifest(results_dir)["runs"])
    for r in rows:
        known.setdefault(r["run_id"], {"detector": r.get("detector"), "loss": r.get("loss"), "seed": r.get("seed")})
    if spec is not None:
        for run in spec.runs():
            known.setdefault(run.run_id, {"detector": run.detector, "loss": run.loss, "seed": run.seed, "never": True})
    slurm = _slurm_states([m["job_id"] for m in known.values() if m.get("executor") == "slurm" and m.get("job_id")])
    out = []
    for run_id, meta in sorted(known.items(), key=lambda kv: (kv[1].get("detector") or "", kv[1].get("loss") or "", kv[0])):
        st = RunStatus(run_id, meta.get("detector"), meta.get("loss"), meta.get("seed"), "missing", job_id=meta.get("job_id"))
        folder = work_dir(results_dir, run_id)
        if RunLock(folder).held_elsewhere():
            st.state = "running"
        elif run_id in by_id and by_id[run_id]["status"] == "done":
            st.state = "done"
        elif run_id in by_id:
            st.state, st.reason = "failed", by_id[run_id].get("reason") or ""
        elif meta.get("never"):
            st.state = "missing"
        elif meta.get("executor") == "slurm":
            job_state = slurm.get(str(meta.get("job_id")), "UNKNOWN")
            if job_state in SLURM_ALIVE:
                st.state = "running" if job_state == "RUNNING" else "pending"
                st.reason = job_state.lower() if job_state not in ("RUNNING", "PENDING") else ""
            else:
                st.state, st.reason = "lost", f"job {meta.get('job_id')} ended {job_state} without a row"
        elif (folder / "state.json").exists():
            st.state, st.reason = "interrupted", "started, no row and nobody running it; a rerun resumes it"
        else:
            st.state = "pending"
        out.append(st)
    return out, corrupt
