"""The local executors: runs on this machine (``local``) or in this process (``debug``).

* ``local``: at most ``cores // cpus_per_run`` runs at once (no oversubscription): a run of one process
  is a fork of a server process that imported the training stack once (:data:`PRELOAD`), a run of T
  processes is T tasks of submitit's LocalExecutor. Without ``--wait`` a detached pool process (``harness
  run SPEC --wait`` with the same filters, :func:`spawn_background_pool`) runs them and the command
  returns once that pool has recorded its queue.
* ``debug``: submitit's DebugExecutor, in this process, one run after another (for debugging; one
  process per run, so not for multi-process runs).

A :class:`LocalPool` holds its own lock (``local/pools/<pool>/lock``) while it lives and records its
runs in the manifest with its id (``HARNESS_POOL_ID`` names it when a parent chose it), marking each run
it ends: a run of a live pool that the pool has not ended counts as queued for every other ``harness
run`` (:mod:`harness.launch.scheduler`). Each run's outcome is its own attempt's (its row, or its rank
0's decision to step aside): a run whose process died reports why it died, never an older row's reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from harness.experiments.spec import RunSpec, Spec
from harness.files import FILE_MODE
from harness.launch.manifest import record_ended, record_submission
from harness.launch.scheduler import pool_lock
from harness.rows import now_iso, write_row
from harness.run.allocator import preloaded
from harness.run.job import RunJob, RunLock, attempt_outcome, freeze_imported, row_identity, work_dir

POOL_ENV = "HARNESS_POOL_ID"  # the id a background pool takes (its parent waits for that pool's lock)

# A local run of one process is a fork of a server process that has imported the training stack once
# (torch, mmengine, mmdet, the harness plug-in, the evaluation): a process of its own as before (its own
# lock, memory and crash), without a fresh interpreter's ~4 s of imports and its teardown per run (a
# forked worker ends with os._exit). Runs of several processes (tasks_per_run) keep submitit's
# LocalExecutor, which starts their tasks and their torch.distributed environment.
PRELOAD = ("torch", "torchvision", "mmengine.runner", "mmdet.models", "mmdet.datasets", "mmdet.evaluation",
           "harness.losses", "harness.detectors.plugin", "harness.run.hooks", "harness.run.train", "harness.run.job",
           "harness.evaluation", "pycocotools.cocoeval")


def local_gpus() -> int:
    """GPUs torch sees on this machine (0 without a CUDA build or a driver)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install counts as none
        return 0


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


def _run_in_worker(run: dict, results_dir: str, force: bool, attempt: str, threads: int, log_path: str,
                   rerun_stale: bool = False) -> None:
    """A run in a fork of the preloaded server: its output to ``log_path``, then :class:`RunJob`; the
    process ends with ``os._exit`` (multiprocessing's), skipping the interpreter's teardown."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)  # the umask decides
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    freeze_imported(collect=False)  # what the server imported
    os.environ["HARNESS_NUM_THREADS"] = str(threads)
    job = RunJob(run, results_dir, force, attempt, rerun_stale)
    os.environ["HARNESS_LOCAL_RUN"] = job.spec.run_id  # the run's own process (its row says how it started)
    job()


class _Handle:
    """A started run; its outcome is its own attempt's, or why its process ended without one."""

    run: RunSpec
    results_dir: Path
    attempt: str

    def _ended_without_row(self, reason: str) -> tuple[str, str]:
        """The attempt left no row and did not step aside: a ``failed`` row saying why (unless another
        process now holds the run: its row will come)."""
        if RunLock(work_dir(self.results_dir, self.run.run_id)).held_elsewhere():
            return "failed", f"{reason}; another process now holds the run"
        write_row(self.results_dir, {**row_identity(self.run), "status": "failed", "reason": reason, "metrics": {},
                                     "curve": [], "provenance": {"host": socket.gethostname(), "attempt": self.attempt,
                                                                 "finished_at": now_iso()}})
        return "failed", reason


class _Forked(_Handle):
    """A single-process local run in a fork of the preloaded server (:data:`PRELOAD`)."""

    def __init__(self, ctx, run: RunSpec, results_dir: Path, force: bool, attempt: str, threads: int,
                 rerun_stale: bool = False):
        self.run, self.results_dir, self.attempt = run, results_dir, attempt
        log_path = results_dir / "local" / run.run_id / "log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = ctx.Process(target=_run_in_worker, name=run.run_id,
                                   args=(run.to_dict(), str(results_dir), force, attempt, threads, str(log_path), rerun_stale))
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
        """(state, reason) of this attempt: its row, its decision to step aside, or why its process ended
        without either (killed, out of memory, past its time limit), written as a ``failed`` row."""
        self.process.join()
        if not self.timed_out:
            own = attempt_outcome(self.results_dir, self.run.run_id, self.attempt)
            if own is not None:
                return own
        return self._ended_without_row(
            f"timed out after {self.run.launch['time_min']} min" if self.timed_out else
            f"the run's process ended without a row (exit code {self.process.exitcode})")


def _wait_for_an_end(running: list, timeout: float) -> None:
    """Sleep until a forked run's process ends or ``timeout`` seconds pass (submitit's jobs are polled):
    a slot is refilled as soon as its run ends, not up to ``timeout`` later, 105 times in the grid."""
    from multiprocessing.connection import wait

    sentinels = [h.process.sentinel for _, h in running if isinstance(h, _Forked)]
    if sentinels:
        wait(sentinels, timeout)
    else:
        time.sleep(timeout)


class _Submitted(_Handle):
    """A run given to submitit (LocalExecutor: multi-process runs; DebugExecutor)."""

    def __init__(self, job, run: RunSpec, results_dir: Path, attempt: str):
        self.job, self.run, self.results_dir, self.attempt = job, run, results_dir, attempt

    def done(self) -> bool:
        return self.job.done()

    def stop(self) -> None:
        if not self.job.done():
            self.job.cancel()

    def outcome(self) -> tuple[str, str]:
        own = attempt_outcome(self.results_dir, self.run.run_id, self.attempt)
        if own is not None:
            return own
        try:
            self.job.results()  # one result per task
            reason = "the job ended without a row"
        except Exception as exc:  # a task died (killed, out of memory, past its time limit) or raised
            last = (str(exc).strip().splitlines() or [""])[-1]
            reason = f"the job ended without a row ({type(exc).__name__}{': ' + last if last else ''})"
        return self._ended_without_row(reason)


def new_pool_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class LocalPool:
    """Runs on this machine (``local``) or in this process (``debug``): :meth:`open` takes the pool's
    lock and records its queue in the manifest, :meth:`run` runs it (at most ``local_slots`` at once)
    and returns each run's outcome; interrupted (Ctrl-C, an error), it stops the runs it started."""

    def __init__(self, spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool, attempt: str,
                 executor_kind: str = "local", log: Callable[[str], None] = print, rerun_stale: bool = False):
        self.spec, self.runs, self.results_dir = spec, list(runs), results_dir
        self.force, self.attempt, self.kind, self.log = force, attempt, executor_kind, log
        self.rerun_stale = rerun_stale
        self.id = os.environ.pop(POOL_ENV, None) or new_pool_id()
        self.lock = pool_lock(results_dir, self.id)

    def open(self) -> None:
        if not self.lock.acquire():
            raise RuntimeError(f"local pool {self.id} is already running")
        record_submission(self.results_dir, self.spec, self.kind, {r.run_id: None for r in self.runs},
                          attempt=self.attempt, pool=self.id)

    def close(self) -> None:
        self.lock.release()
        shutil.rmtree(self.lock.path.parent, ignore_errors=True)

    def run(self) -> dict[str, tuple[str, str]]:
        import multiprocessing

        import submitit

        runs, results_dir, kind = self.runs, self.results_dir, self.kind
        slots = 1 if kind == "debug" else local_slots(runs)
        threads = max(r.launch["cpus_per_run"] for r in runs) if runs else 1
        os.environ["HARNESS_NUM_THREADS"] = str(threads)
        if kind == "debug":
            executor = submitit.DebugExecutor(folder=results_dir / "local" / "%j")
        else:
            executor = submitit.LocalExecutor(folder=results_dir / "local" / "%j")
        ctx = None
        if kind == "local" and any(r.world_size == 1 for r in runs):
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))
        # the processes started here preload tcmalloc where installed (harness.run.allocator)
        with preloaded() if kind != "debug" else contextlib.nullcontext():
            return self._run_queue(executor, ctx, slots, threads)

    def _run_queue(self, executor, ctx, slots: int, threads: int) -> dict[str, tuple[str, str]]:
        runs, results_dir, kind = self.runs, self.results_dir, self.kind
        queue = list(runs)
        running: list[tuple[RunSpec, _Handle]] = []
        outcomes: dict[str, tuple[str, str]] = {}
        total = len(queue)
        try:
            prepare_data(runs, self.log)
            while queue or running:
                while queue and len(running) < slots:
                    run = queue.pop(0)
                    if ctx is not None and run.world_size == 1:
                        handle: _Handle = _Forked(ctx, run, results_dir, self.force, self.attempt, threads, self.rerun_stale)
                    else:
                        params = {"timeout_min": run.launch["time_min"]}
                        if kind != "debug":
                            params["tasks_per_node"] = run.world_size
                        executor.update_parameters(**params)
                        job = executor.submit(RunJob(run, results_dir, self.force, self.attempt, self.rerun_stale))
                        handle = _Submitted(job, run, results_dir, self.attempt)
                        if kind == "debug":
                            try:
                                job.result()  # the debug executor runs on demand, in this process
                            except Exception:  # noqa: BLE001  (the outcome says what happened)
                                pass
                    running.append((run, handle))
                    self.log(f"started  {run.run_id} ({len(outcomes)}/{total} finished, {len(running)} running, "
                             f"{len(queue)} queued)")
                still = []
                for run, handle in running:
                    if handle.done():
                        state, reason = outcomes[run.run_id] = handle.outcome()
                        record_ended(results_dir, run.run_id, self.id)
                        self.log(f"finished {run.run_id} {state}{f': {reason}' if reason else ''} "
                                 f"({len(outcomes)}/{total})")
                    else:
                        still.append((run, handle))
                ended = len(still) < len(running)
                running = still
                if running and not ended:  # a slot that just freed is refilled at once, not after the wait
                    _wait_for_an_end(running, 0.2)
        finally:
            for _, handle in running:
                handle.stop()
        return outcomes


@dataclass
class Background:
    pid: int
    started: bool  # its pool took its lock and recorded its queue
    note: str = ""  # why it did not start, when it did not


def spawn_background_pool(spec_path: Path, results_dir: Path, executor: str, *, force: bool = False,
                          only: Iterable[str] = (), start_timeout_s: float = 300.0,
                          rerun_stale: bool = False) -> Background:
    """Start ``harness run SPEC --wait`` detached (its own session) with the same filters (``--force``,
    ``--rerun-stale``, every ``--only``), in this working directory (relative loss-module paths resolve as here), logging to
    ``results_dir/local-pool.log``; return once its pool has recorded its queue (so a ``harness run``
    right after sees those runs queued), or the process ended first."""
    log_path = results_dir / "local-pool.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "harness", "run", str(Path(spec_path).resolve()), "--executor", executor, "--wait",
           "--results", str(results_dir.resolve().parent)]
    if force:
        cmd.append("--force")
    if rerun_stale:
        cmd.append("--rerun-stale")
    for item in only:
        cmd += ["--only", item]
    pool = new_pool_id()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path.cwd(), env={**os.environ, POOL_ENV: pool})
    deadline = time.time() + start_timeout_s
    lock = pool_lock(results_dir, pool)
    while True:
        if lock.held_elsewhere():
            return Background(proc.pid, True)
        code = proc.poll()
        if code is not None:
            note = ("it found nothing left to run (another submission took the runs)" if code == 0 else
                    f"it exited with code {code} before starting")
            return Background(proc.pid, False, f"{note}; see {log_path}")
        if time.time() > deadline:
            return Background(proc.pid, False, f"it has not started after {start_timeout_s:.0f} s; see {log_path}")
        time.sleep(0.1)
