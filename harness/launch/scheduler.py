"""The schedulers' own answer: which submitted runs are queued or running now, anywhere.

The plan (:mod:`harness.launch.plan`), the waiting (:mod:`harness.launch.wait`) and ``harness status``
ask here, so a run queued on SLURM, waiting in a live local pool or held by a live process is never
submitted twice. Sources:

* a run's lock (``work/<run_id>/lock``, :class:`harness.run.job.RunLock`) held by a live process: running;
* SLURM job ids in the manifest: ``squeue -r`` (one line per array task; a held job is ``PENDING``), then
  ``sacct`` for jobs squeue no longer lists: ``RUNNING`` is running, every other live state (pending,
  held, requeued, suspended ...) is queued;
* local pools: a pool (:mod:`harness.launch.local`) holds its own lock while it lives and records its
  runs in the manifest; a run of a live pool that the pool has not ended is queued.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.launch.manifest import read_manifest
from harness.run.job import RunLock, work_dir

SLURM_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "REQUEUE_HOLD",
               "REQUEUE_FED"}


@dataclass(frozen=True)
class Live:
    """A run queued or running somewhere: ``state`` is ``queued`` or ``running``; ``where`` says where."""

    state: str
    where: str


@dataclass(frozen=True)
class JobState:
    state: str  # SLURM's state (PENDING, RUNNING, COMPLETED, CANCELLED ...; UNKNOWN when neither command knows)
    reason: str = ""  # squeue's reason for a pending job (JobHeldUser, Priority, Resources ...)


def slurm_states(job_ids: list[str]) -> dict[str, JobState]:
    """State of each SLURM job id (array tasks as ``<array>_<task>``), from squeue then sacct."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    states: dict[str, JobState] = {}
    try:
        # -r: one line per array task (without it pending tasks fold into one "33_[10-34]" line)
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(sorted(set(job_ids)))],
                             capture_output=True, text=True, timeout=20).stdout
        for line in out.splitlines():
            jid, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            states[jid] = JobState(state, "" if reason in ("None", "(null)") else reason)
        missing = [j for j in job_ids if j not in states]
        if missing and shutil.which("sacct"):
            out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)],
                                 capture_output=True, text=True, timeout=20).stdout
            for line in out.splitlines():
                jid, _, st = line.partition("|")
                states.setdefault(jid, JobState(st.split()[0] if st else "UNKNOWN"))
    except (OSError, subprocess.SubprocessError):
        pass
    return states


def pool_lock(results_dir: str | Path, pool: str) -> RunLock:
    """The lock a local pool holds while it lives (``local/pools/<pool>/lock``)."""
    return RunLock(Path(results_dir) / "local" / "pools" / pool)


def live_runs(results_dir: str | Path, run_ids=None, manifest: dict | None = None,
              states: dict[str, JobState] | None = None) -> dict[str, Live]:
    """The runs (of ``run_ids``, else every run in the manifest) queued or running now, with where
    (``states``: what :func:`slurm_states` answered for the manifest's jobs, when already asked)."""
    results_dir = Path(results_dir)
    entries = (manifest or read_manifest(results_dir))["runs"]
    ids = set(entries) if run_ids is None else set(run_ids)
    live: dict[str, Live] = {}
    for run_id in ids:
        if RunLock(work_dir(results_dir, run_id)).held_elsewhere():
            live[run_id] = Live("running", "a live process holds its lock")
    slurm = {run_id: str(e["job_id"]) for run_id, e in entries.items()
             if run_id in ids and run_id not in live and e.get("executor") == "slurm" and e.get("job_id")}
    if states is None:
        states = slurm_states(sorted(set(slurm.values())))
    for run_id, job_id in slurm.items():
        job = states.get(job_id, JobState("UNKNOWN"))
        if job.state in SLURM_ALIVE:
            detail = job.state.lower() + (f", {job.reason}" if job.reason else "")
            live[run_id] = Live("running" if job.state == "RUNNING" else "queued", f"SLURM job {job_id} ({detail})")
    pools: dict[str, bool] = {}
    for run_id, e in entries.items():
        pool = e.get("pool")
        if run_id not in ids or run_id in live or not pool or e.get("ended_at"):
            continue
        if pool not in pools:
            pools[pool] = pool_lock(results_dir, pool).held_elsewhere()
        if pools[pool]:
            live[run_id] = Live("queued", f"local pool {pool}")
    return live
