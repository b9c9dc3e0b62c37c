"""Placing a spec's runs on an executor as submitit jobs, skipping finished work (the steps that
:mod:`harness.launch.orchestrate` strings together for ``harness run`` and ``harness benchmark``).

Executors (``--executor``, else the spec's ``launch.executor``):

* ``slurm``: runs grouped by resources into one job array each (``slurm_array_parallelism`` = the spec's
  ``array_parallelism``); a run of T > 1 processes (``world_size``: one per GPU, or ``tasks_per_run``
  on CPU) is one node with T tasks, mmengine's distributed launch inside the job. Submits, writes the
  manifest and returns unless ``--wait``.
* ``local``: this machine, at most ``cores // cpus_per_run`` runs at once (no oversubscription): a run of
  one process is a fork of a server process that imported the training stack once (:data:`PRELOAD`), a
  run of T processes is T tasks of submitit's LocalExecutor. Without ``--wait`` a detached pool process
  runs them and the command returns.
* ``debug``: submitit's DebugExecutor, in this process, one run after another (for debugging; one
  process per run, so not for multi-process runs).
* ``auto``: ``slurm`` when ``sbatch`` is on PATH, else ``local``.

A run with a ``done`` row is skipped (``--force`` redoes it); a ``failed`` one runs again; a run whose
lock is held by a live process is left to it. Everything submitted is recorded in
``results/<experiment>/manifest.json`` (:mod:`harness.launch.manifest`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from harness.experiments.spec import RunSpec, Spec
from harness.launch.manifest import record_submission
from harness.rows import read_rows, row_path, write_row
from harness.run.job import RunJob, RunLock, row_identity, work_dir


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

# A local run of one process is a fork of a server process that has imported the training stack once
# (torch, mmengine, mmdet, the harness plug-in, the evaluation): a process of its own as before (its own
# lock, memory and crash), without a fresh interpreter's ~4 s of imports and its teardown per run (a
# forked worker ends with os._exit). Runs of several processes (tasks_per_run) keep submitit's
# LocalExecutor, which starts their tasks and their torch.distributed environment.
PRELOAD = ("torch", "torchvision", "mmengine.runner", "mmdet.models", "mmdet.datasets", "mmdet.evaluation",
           "harness.losses", "harness.detectors.plugin", "harness.run.hooks", "harness.run.train", "harness.run.job",
           "harness.evaluation", "pycocotools.cocoeval")


def local_slots(runs: list[RunSpec]) -> int:
    cores = os.cpu_count() or 1
    per_run = max(r.launch["cpus_per_run"] for r in runs) if runs else 1
    return max(1, cores // per_run)


def prepare_data(runs: Iterable[RunSpec], log: Callable[[str], None] = print) -> bool:
    """Generate the runs' synthetic data once, here, before any run starts (else the first runs, in
    parallel, would each make it); returns whether any had to be made (False when all was cached)."""
    from harness.data.synthetic import ensure_synthetic, is_current, synthetic_cache_dir
    from harness.run.train import synthetic_params

    made = False
    params = {p for p in (synthetic_params(dict(r.dataset)) for r in runs) if p is not None}
    for p in params:
        if not is_current(synthetic_cache_dir(p), p):
            log(f"generating the synthetic data ({p.kind}) ...")
            ensure_synthetic(params=p)
            made = True
    return made


def _run_in_worker(run: dict, results_dir: str, force: bool, threads: int, log_path: str) -> None:
    """A run in a fork of the preloaded server: its output to ``log_path``, then :class:`RunJob`; the
    process ends with ``os._exit`` (multiprocessing's), skipping the interpreter's teardown."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["HARNESS_NUM_THREADS"] = str(threads)
    job = RunJob(run, results_dir, force)
    os.environ["HARNESS_LOCAL_RUN"] = job.spec.run_id  # the run's own process (its row says how it started)
    job()


class _Forked:
    """A single-process local run in a fork of the preloaded server (:data:`PRELOAD`)."""

    def __init__(self, ctx, run: RunSpec, results_dir: Path, force: bool, threads: int):
        self.run, self.results_dir = run, results_dir
        log_path = results_dir / "local" / run.run_id / "log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = ctx.Process(target=_run_in_worker, name=run.run_id,
                                   args=(run.to_dict(), str(results_dir), force, threads, str(log_path)))
        self.process.start()
        self.deadline = time.time() + 60 * run.launch["time_min"]
        self.timed_out = False

    def done(self) -> bool:
        if self.process.is_alive() and time.time() > self.deadline:
            self.timed_out = True
            self.stop()
        return not self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def outcome(self) -> tuple[str, str]:
        """(state, reason) of the finished run, from its row; a process that ended without one (killed,
        out of memory, past its time limit) gets a ``failed`` row saying so, unless another process holds
        the run (then this one only stepped aside)."""
        self.process.join()
        path = row_path(self.results_dir, self.run.run_id)
        try:
            row = json.loads(path.read_text())
            return row.get("status", "?"), row.get("reason") or ""
        except (OSError, ValueError):
            pass
        if RunLock(work_dir(self.results_dir, self.run.run_id)).held_elsewhere():
            return "skipped", "another process is running it"
        reason = (f"timed out after {self.run.launch['time_min']} min" if self.timed_out else
                  f"the run's process ended without a row (exit code {self.process.exitcode})")
        write_row(self.results_dir, {**row_identity(self.run), "status": "failed", "reason": reason, "metrics": {},
                                     "curve": [], "provenance": {"host": socket.gethostname(),
                                                                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}})
        return "failed", reason


class _Submitted:
    """A run given to submitit (LocalExecutor: multi-process runs; DebugExecutor)."""

    def __init__(self, job):
        self.job = job

    def done(self) -> bool:
        return self.job.done()

    def stop(self) -> None:
        if not self.job.done():
            self.job.cancel()

    def outcome(self) -> tuple[str, str]:
        try:
            row = self.job.results()[0]  # one result per task; rank 0's is the run's
            return row.get("status", "?"), row.get("reason") or ""
        except Exception as exc:  # the job process died (killed, out of memory)
            return "failed", f"job ended without a row ({type(exc).__name__})"


def run_local_pool(spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool,
                   log: Callable[[str], None] = print, executor_kind: str = "local") -> None:
    """Run ``runs`` on this machine, at most ``local_slots`` at once: single-process runs as forks of the
    preloaded server (:data:`PRELOAD`), runs of several processes with submitit's LocalExecutor; with
    ``debug``, submitit's DebugExecutor in this process, one run after another. The synthetic data is
    generated first, once. Interrupted (Ctrl-C, an error), it stops the runs it started."""
    import multiprocessing

    import submitit

    slots = 1 if executor_kind == "debug" else local_slots(runs)
    threads = max(r.launch["cpus_per_run"] for r in runs) if runs else 1
    os.environ["HARNESS_NUM_THREADS"] = str(threads)
    if executor_kind == "debug":
        executor = submitit.DebugExecutor(folder=results_dir / "local" / "%j")
    else:
        executor = submitit.LocalExecutor(folder=results_dir / "local" / "%j")
    ctx = None
    if executor_kind == "local" and any(r.world_size == 1 for r in runs):
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(PRELOAD))
    prepare_data(runs, log)
    queue = list(runs)
    running: list[tuple[RunSpec, object]] = []
    total, finished = len(queue), 0
    record_submission(results_dir, spec, executor_kind, {r.run_id: None for r in runs})
    try:
        while queue or running:
            while queue and len(running) < slots:
                run = queue.pop(0)
                if ctx is not None and run.world_size == 1:
                    handle = _Forked(ctx, run, results_dir, force, threads)
                else:
                    params = {"timeout_min": run.launch["time_min"]}
                    if executor_kind != "debug":
                        params["tasks_per_node"] = run.world_size
                    executor.update_parameters(**params)
                    handle = _Submitted(executor.submit(RunJob(run, results_dir, force)))
                    if executor_kind == "debug":
                        handle.job.result()  # the debug executor runs on demand, in this process
                running.append((run, handle))
                log(f"started  {run.run_id} ({finished}/{total} finished, {len(running)} running, {len(queue)} queued)")
            still = []
            for run, handle in running:
                if handle.done():
                    finished += 1
                    state, reason = handle.outcome()
                    log(f"finished {run.run_id} {state}{f': {reason}' if reason else ''} ({finished}/{total})")
                else:
                    still.append((run, handle))
            running = still
            if running:
                time.sleep(0.2)
    finally:
        for _, handle in running:
            handle.stop()


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
