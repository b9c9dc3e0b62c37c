"""Placing a spec's runs on an executor as submitit jobs, skipping finished work (the steps that
:mod:`harness.launch.orchestrate` strings together for ``harness run`` and ``harness benchmark``).

Executors (``--executor``, else the spec's ``launch.executor``):

* ``slurm``: runs grouped by resources into one job array each (``slurm_array_parallelism`` = the spec's
  ``array_parallelism``); a run of T > 1 processes (``world_size``: one per GPU, or ``tasks_per_run``
  on CPU) is one node with T tasks, mmengine's distributed launch inside the job. Submits, writes the
  manifest and returns unless ``--wait``.
* ``local``: submitit's LocalExecutor on this machine, at most ``cores // cpus_per_run`` runs at once (no
  oversubscription); a run of T processes is T local tasks. Without ``--wait`` a detached pool process
  runs them and the command returns.
* ``debug``: submitit's DebugExecutor, in this process, one run after another (for debugging; one
  process per run, so not for multi-process runs).
* ``auto``: ``slurm`` when ``sbatch`` is on PATH, else ``local``.

A run with a ``done`` row is skipped (``--force`` redoes it); a ``failed`` one runs again; a run whose
lock is held by a live process is left to it. Everything submitted is recorded in
``results/<experiment>/manifest.json`` (:mod:`harness.launch.manifest`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from harness.experiments.spec import RunSpec, Spec
from harness.launch.manifest import record_submission
from harness.rows import read_rows, row_path
from harness.run.job import RunJob, RunLock, work_dir


def slurm_reachable() -> bool:
    """True when SLURM's commands exist and answer: ``sinfo`` reaches a controller."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def resolve_executor(kind: str) -> str:
    """``auto``: ``slurm`` where a SLURM controller answers, else ``local`` (SLURM's client alone, with
    no cluster configured, is not enough)."""
    if kind == "auto":
        return "slurm" if slurm_reachable() else "local"
    return kind


@dataclass
class Plan:
    submit: list[RunSpec]
    done: list[RunSpec]
    busy: list[RunSpec]  # locked by a live process elsewhere

    def summary(self) -> str:
        return f"{len(self.submit)} to run, {len(self.done)} already done, {len(self.busy)} running elsewhere"


def make_plan(spec: Spec, results_dir: Path, force: bool = False, rows: list[dict] | None = None) -> Plan:
    """Which runs to submit, which are done, which another process is running (``rows``: the results
    folder's rows when already read)."""
    if rows is None:
        rows, _ = read_rows(results_dir, warn=True)
    status = {r["run_id"]: r["status"] for r in rows}
    plan = Plan([], [], [])
    for run in spec.runs():
        if RunLock(work_dir(results_dir, run.run_id)).held_elsewhere():
            plan.busy.append(run)
        elif status.get(run.run_id) == "done" and not force:
            plan.done.append(run)
        else:
            plan.submit.append(run)
    return plan


def group_by_resources(runs: Iterable[RunSpec]) -> dict[tuple, list[RunSpec]]:
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for run in runs:
        groups[run.resources].append(run)
    return dict(groups)


# ------------------------------------------------------------------------------------------------
# SLURM


def slurm_parameters(run: RunSpec) -> dict:
    from harness.launch.cluster import load_profile

    launch = run.launch
    profile = load_profile(launch["cluster"])
    gpus = launch["gpus_per_run"]
    params = profile.executor_parameters(gpus=gpus, time_min=launch["time_min"], partition=launch["partition"] or "default")
    params["slurm_array_parallelism"] = launch["array_parallelism"]
    params["slurm_signal_delay_s"] = 120 if launch["time_min"] > 10 else 30
    tasks = run.world_size
    if tasks > 1:  # one task per GPU (or per CPU share) on one node; mmengine's distributed launch inside
        params["tasks_per_node"] = tasks
        params["cpus_per_task"] = max(1, launch["cpus_per_run"] // tasks)
    elif "cpus_per_task" in params or not gpus:
        params["cpus_per_task"] = launch["cpus_per_run"]
    if profile.mem_gb is not None or gpus:
        params["mem_gb"] = launch["mem_gb"]
    return params


def submit_slurm(spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool) -> list:
    import submitit

    jobs = []
    for _, group in group_by_resources(runs).items():
        # long trainings are resumed across many preemptions / timeouts
        executor = submitit.AutoExecutor(folder=results_dir / "slurm" / "%j", cluster="slurm", slurm_max_num_timeout=20)
        executor.update_parameters(name=f"{spec.name}", **slurm_parameters(group[0]))
        with executor.batch():
            group_jobs = [executor.submit(RunJob(run, results_dir, force)) for run in group]
        jobs.extend(zip(group, group_jobs))
    record_submission(results_dir, spec, "slurm", {run.run_id: job.job_id for run, job in jobs})
    return jobs


# ------------------------------------------------------------------------------------------------
# local and debug


def local_slots(runs: list[RunSpec]) -> int:
    cores = os.cpu_count() or 1
    per_run = max(r.launch["cpus_per_run"] for r in runs) if runs else 1
    return max(1, cores // per_run)


def run_local_pool(spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool,
                   log: Callable[[str], None] = print, executor_kind: str = "local") -> None:
    """Run ``runs`` with submitit's LocalExecutor (or DebugExecutor), at most ``local_slots`` at once."""
    import submitit

    slots = 1 if executor_kind == "debug" else local_slots(runs)
    threads = max(r.launch["cpus_per_run"] for r in runs) if runs else 1
    os.environ["HARNESS_NUM_THREADS"] = str(threads)
    if executor_kind == "debug":
        executor = submitit.DebugExecutor(folder=results_dir / "local" / "%j")
    else:
        executor = submitit.LocalExecutor(folder=results_dir / "local" / "%j")
    queue = list(runs)
    running: list[tuple[RunSpec, object]] = []
    total, finished = len(queue), 0
    record_submission(results_dir, spec, executor_kind, {r.run_id: None for r in runs})
    while queue or running:
        while queue and len(running) < slots:
            run = queue.pop(0)
            params = {"timeout_min": run.launch["time_min"]}
            if executor_kind != "debug":
                params["tasks_per_node"] = run.world_size
            executor.update_parameters(**params)
            job = executor.submit(RunJob(run, results_dir, force))
            if executor_kind == "debug":
                job.result()  # the debug executor runs on demand, in this process
            running.append((run, job))
            log(f"started  {run.run_id} ({finished}/{total} finished, {len(running)} running, {len(queue)} queued)")
        still = []
        for run, job in running:
            if job.done():
                finished += 1
                try:
                    row = job.results()[0]  # one result per task; rank 0's is the run's
                    state = row.get("status", "?")
                    extra = f": {row.get('reason')}" if row.get("reason") else ""
                except Exception as exc:  # the job process died (killed, out of memory)
                    state, extra = "failed", f": job ended without a row ({type(exc).__name__})"
                log(f"finished {run.run_id} {state}{extra} ({finished}/{total})")
            else:
                still.append((run, job))
        running = still
        if running:
            time.sleep(1.0)


def spawn_background_pool(spec_path: Path, results_dir: Path, executor: str, *, force: bool = False,
                          only: Iterable[str] = ()) -> int:
    """Start ``harness run SPEC --wait`` detached (its own session) with the same filters (``--force``,
    every ``--only``), in this working directory (relative loss-module paths resolve as here), logging to
    ``results_dir/local-pool.log``."""
    log_path = results_dir / "local-pool.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "harness", "run", str(Path(spec_path).resolve()), "--executor", executor, "--wait",
           "--results", str(results_dir.resolve().parent)]
    if force:
        cmd.append("--force")
    for item in only:
        cmd += ["--only", item]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path.cwd())
    return proc.pid


def wait_for(spec: Spec, results_dir: Path, timeout_s: float | None, log: Callable[[str], None] = print,
             poll_s: float = 2.0) -> bool:
    """Block until every run of ``spec`` has a row and none is locked; progress on each change."""
    start, last = time.time(), None
    while True:
        rows, _ = read_rows(results_dir, warn=False)
        plan = make_plan(spec, results_dir, rows=rows)
        ids = {r.run_id for r in spec.runs()}
        failed = sum(1 for r in rows if r["run_id"] in ids and r["status"] == "failed")
        line = f"{len(plan.done)}/{len(ids)} done, {failed} failed, {len(plan.busy)} running"
        if line != last:
            log(line)
            last = line
        pending = [r for r in plan.submit if not row_path(results_dir, r.run_id).exists()]
        if not plan.busy and not pending:
            return True
        if timeout_s is not None and time.time() - start > timeout_s:
            log(f"timed out after {timeout_s:.0f} s: {line}")
            return False
        time.sleep(poll_s)
