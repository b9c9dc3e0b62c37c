"""One run as a submitit job: a thin, picklable, checkpointable callable.

:class:`RunJob` holds only a :class:`~harness.experiments.spec.RunSpec` (plain data) and the results
folder; heavy modules (torch, mmdet) are imported inside ``__call__``. A call:

1. decides, once, in rank 0 (the only process of a single-process run): it takes the run's lock
   (``work/<run_id>/lock``, an ``flock`` released when the process dies), so two processes never train
   the same run, and decides whether to train (resuming from a checkpoint when there is one), restart
   (``force``: the old row, checkpoints and curve deleted first, once per attempt: a later start of the
   same attempt, e.g. SLURM's requeue after a node failure, resumes; :func:`restart_marker`) or step
   aside (the run is locked elsewhere, or already done). It writes that decision to ``work/<run_id>/decisions/<key>.json``, keyed
   by the submission's attempt, the job id and its restart count; every other rank of a multi-process run
   waits for that file (at most :data:`DECISION_WAIT_S`) before it reads any checkpoint, and follows it:
   trains, or returns at once (no rank waits in ``init_process_group`` for a rank 0 that stepped aside);
2. imports the spec's external loss modules in this process (one that cannot be imported here makes a
   ``failed`` row with the reason, before training), then trains with mmengine's Runner in
   ``work/<run_id>/`` (:mod:`harness.run.train`), saving checkpoints regularly and resuming from the
   latest one when there is one;
3. evaluates and writes the run's result row atomically (``runs/<run_id>.json``), status ``done``, or
   ``failed`` with the reason (a NaN/Inf loss, an exception). The row records the submission's
   ``attempt`` (``provenance.attempt``), so whoever submitted it tells its own outcome from an older row
   (:func:`attempt_outcome`), and the run's fingerprint (the code, config, loss modules and versions it
   ran: :mod:`harness.run.fingerprint`, whose code part is taken when this module is imported, i.e. when
   the job's code is loaded). A run is trained by one start or, preempted and resumed, by several, each
   a process that may have loaded other code (a requeued job importing a checkout after ``git pull``):
   rank 0 records each start's fingerprint when it begins training (``work/<run_id>/starts.json``,
   :func:`record_start`), and the row names every start that trained it (``provenance.starts``,
   ``provenance.resumes``) and, under ``fingerprint.resumed_from``, the fingerprints of the earlier ones
   that differ from the last's: such a row is stale (:func:`harness.run.fingerprint.stale_reasons`). A
   resumed run is never restarted for it; ``--rerun-stale`` redoes it, and a restart deletes the record
   with the checkpoints.

``rerun_stale`` (``harness run --rerun-stale``) makes rank 0 restart, as ``force`` does, a run whose
``done`` row's fingerprint differs from what this code builds for it.

On preemption or timeout submitit calls :meth:`RunJob.checkpoint`, which resubmits a fresh instance of
the same run: it resumes from the latest checkpoint in the work folder. submitit then ends the process
with ``SystemExit`` raised from its signal handler, wherever the run happens to be; code on the way may
turn that into another exception (mmengine's config formatting, run at every checkpoint save, catches
everything and raises ``SyntaxError``). So once :meth:`checkpoint` has been called nothing the process
raises is the run's failure: no row is written and the process exits for the requeued job to go on.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import submitit

from harness.experiments.spec import RunSpec
from harness.files import FILE_MODE, write_json_atomic
from harness.rows import now_iso, row_path, write_row
from harness.run import hardware
from harness.run.allocator import in_use as allocator_in_use
from harness.run.fingerprint import loaded_code, recorded, with_starts  # imported with the job: the code as loaded


def work_dir(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "work" / run_id


ACQUIRE_RETRY_S = 2.0  # how long a refused lock is asked again before it counts as held by another process


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``work/<run_id>/lock``; freed when the holder dies."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "lock"
        self._fd: int | None = None

    def acquire(self, retry_s: float = ACQUIRE_RETRY_S) -> bool:
        """Take the lock; False when another process holds it. A refusal is asked again for ``retry_s``
        (every 20 ms): :meth:`held_elsewhere` (``harness status``, the plan, ``run --wait`` every 2 s)
        holds a shared lock on the file for an instant, and an acquirer that came in that instant would
        otherwise step aside from a run nobody is running. A holder that trains holds it for the run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)  # the umask decides
        deadline = time.monotonic() + retry_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """True when another live process holds the lock (used by status and the plan). It asks by taking
        a shared lock for an instant (the only question ``flock`` answers, on NFS too), which
        :meth:`acquire` rides out by asking again."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def _cpu_roi_align() -> str | None:
    """Which kernels computed RoIAlign on a CPU in this process (:func:`harness.detectors.kernels.cpu_roi_align`:
    the harness's C kernels or torchvision's, the same values); None when no cell code was loaded."""
    kernels = sys.modules.get("harness.detectors.kernels")
    return kernels.cpu_roi_align() if kernels is not None else None


def _cpu_sgd() -> str | None:
    """What updated SGD's CPU parameters in this process (:func:`harness.detectors.sgd.cpu_sgd`: the harness's C
    kernel or torch's own update, the same values); None when no cell code was loaded."""
    sgd = sys.modules.get("harness.detectors.sgd")
    return sgd.cpu_sgd() if sgd is not None else None


def freeze_imported(*modules: str, collect: bool = True) -> None:
    """Import ``modules``, then move every object this process holds out of the garbage collector's walk
    (``gc.freeze``). For a process that trains run after run (a rehearsal job) or a fork of one that
    imported the training stack (a local run): those objects live as long as the process, yet mmengine's
    datasets call ``gc.collect()`` as they are built (three times a run), each call walking about 500,000
    of them (0.2-0.5 s; in a fork it also copies the memory pages it walks). Call it once, before any run:
    what it freezes is never freed (``collect``: collect the garbage first, which a fresh fork of a server
    that only imported need not do)."""
    import gc
    import importlib

    for module in modules:
        importlib.import_module(module)
    if collect:
        gc.collect()
    gc.freeze()


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:
        return os.environ.get("SLURM_JOB_ID")


def _rank() -> int:
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:
        return 0


def _restarts() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def new_attempt() -> str:
    """A token naming one submission (one ``harness run``): its rows and decisions carry it."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"


# ------------------------------------------------------------------------------------------------
# One decision per run launch, made by rank 0 and followed by every rank

DECISION_WAIT_S = 300.0  # the longest a rank > 0 waits for rank 0's decision (rank 0 decides in a second)
ACTIONS = ("train", "restart", "skip")  # train: from scratch or resuming; restart: --force; skip: step aside


def decisions_dir(folder: Path) -> Path:
    return Path(folder) / "decisions"


def decision_key(attempt: str | None) -> str:
    """The same for every rank of one launch of a job: the attempt, the job id, its restart count."""
    job = str(_job_id() or "nojob").replace("/", "_")
    return f"{attempt or 'noattempt'}.{job}.{_restarts()}"


def restart_marker(folder: Path, attempt: str | None) -> Path | None:
    """``decisions/restart-<attempt>.json``: the attempt's ``--force`` (or ``--rerun-stale``) restart was
    done, so that every later start of that attempt resumes instead of deleting again (SLURM requeues a
    job after a node failure by reloading it as submitted, force and all). None without an attempt."""
    return decisions_dir(folder) / f"restart-{attempt}.json" if attempt else None


def write_decision(folder: Path, key: str, action: str, reason: str = "") -> None:
    assert action in ACTIONS, action
    write_json_atomic(decisions_dir(folder) / f"{key}.json",
                      {"key": key, "action": action, "reason": reason, "pid": os.getpid(),
                       "host": socket.gethostname(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})


def read_decision(folder: Path, key: str) -> dict | None:
    try:
        return json.loads((decisions_dir(folder) / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def await_decision(folder: Path, key: str, timeout_s: float | None = None, poll_s: float = 0.1) -> dict:
    """Rank 0's decision for ``key``; raises after ``timeout_s`` (default :data:`DECISION_WAIT_S`: rank 0
    never came)."""
    timeout_s = DECISION_WAIT_S if timeout_s is None else timeout_s
    deadline = time.time() + timeout_s
    while True:
        decision = read_decision(folder, key)
        if decision is not None:
            return decision
        if time.time() > deadline:
            raise RuntimeError(f"rank 0 of run {Path(folder).name} made no decision ({key}) within {timeout_s:.0f} s; "
                               f"this task stops instead of waiting for it")
        time.sleep(poll_s)


def attempt_outcome(results_dir: str | Path, run_id: str, attempt: str) -> tuple[str, str] | None:
    """(state, reason) of ``run_id``'s ``attempt``: its row when that attempt wrote it, ``skipped`` when
    its rank 0 stepped aside (already done, locked elsewhere); None when the attempt left neither."""
    try:
        row = json.loads(row_path(results_dir, run_id).read_text())
        if isinstance(row, dict) and (row.get("provenance") or {}).get("attempt") == attempt:
            return row.get("status", "?"), row.get("reason") or ""
    except (OSError, ValueError):
        pass
    for path in sorted(decisions_dir(work_dir(results_dir, run_id)).glob(f"{attempt}.*.json")):
        try:
            decision = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if decision.get("action") == "skip":
            return "skipped", decision.get("reason") or ""
    return None


# ------------------------------------------------------------------------------------------------
# The starts that trained a run: each start records its fingerprint, the row names them all

STARTS_FILE = "starts.json"  # in the work folder: {"run_id", "starts": [...]}, rewritten atomically by rank 0


def read_starts(folder: Path) -> list[dict]:
    """The starts whose training the run's latest checkpoint holds, oldest first ([] when none)."""
    try:
        data = json.loads((Path(folder) / STARTS_FILE).read_text())
        starts = data.get("starts") if isinstance(data, dict) else None
        return [s for s in starts if isinstance(s, dict)] if isinstance(starts, list) else []
    except (OSError, ValueError):
        return []


def record_start(folder: Path, spec: RunSpec, attempt: str | None, epoch: int, iteration: int,
                 config: str | None) -> None:
    """Record, when rank 0 begins training at ``iteration`` (0: from scratch; else resuming from the
    checkpoint of that iteration), this start's fingerprint: the code it loaded, its config. The starts
    that began at or after that iteration go: their training is not in the checkpoint resumed from (a
    start from scratch leaves itself alone). A resumed checkpoint that no recorded start made (a start
    that left no record, e.g. by a harness from before this record, or a lost file) is recorded as a
    start of unknown fingerprint, so that the row never passes for one fingerprint's."""
    kept = [s for s in read_starts(folder) if int(s.get("from_iteration") or 0) < iteration]
    if iteration > 0 and (not kept or int(kept[0].get("from_iteration") or 0) > 0):
        kept.insert(0, {"fingerprint": None, "from_epoch": 0, "from_iteration": 0,
                        "note": "trained the checkpoint resumed from, and left no record"})
    kept.append({"fingerprint": recorded(spec, config), "attempt": attempt, "job_id": _job_id(),
                 "restarts": _restarts(), "host": socket.gethostname(), "pid": os.getpid(),
                 "from_epoch": int(epoch), "from_iteration": int(iteration),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json_atomic(Path(folder) / STARTS_FILE, {"run_id": spec.run_id, "starts": kept})


def row_identity(spec: RunSpec) -> dict:
    """The part of a run's row that says which run it is: what determines its result, its id, its experiment."""
    return {**spec.identity, "run_id": spec.run_id, "experiment": spec.experiment}


def write_state(folder: Path, **fields: Any) -> None:
    """``work/<run_id>/state.json``: what the run is doing now (read by ``harness status``)."""
    path = folder / "state.json"
    state = {}
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
    state.update(fields, updated_at=time.time())
    write_json_atomic(path, state)


class RunJob(submitit.helpers.Checkpointable):
    """The callable submitted for one run; returns the run's result row (or a note that it was skipped)."""

    def __init__(self, run: RunSpec | dict, results_dir: str | Path, force: bool = False, attempt: str | None = None,
                 rerun_stale: bool = False):
        self.run = run.to_dict() if isinstance(run, RunSpec) else dict(run)
        self.results_dir = str(results_dir)
        self.force = force
        self.rerun_stale = rerun_stale  # restart a done run whose fingerprint differs from this code's
        self.attempt = attempt  # the submission's token (new_attempt), recorded in the row and the decision
        self._interrupted = False  # set by checkpoint(): the job is being requeued

    @property
    def spec(self) -> RunSpec:
        return RunSpec.from_dict(self.run)

    def __call__(self) -> dict:
        self._entered = time.time()  # the run's code starts: its process's start-up ends
        spec = self.spec
        folder = work_dir(self.results_dir, spec.run_id)
        key = decision_key(self.attempt)
        if _rank() != 0:  # a multi-process run: rank 0 decides, this rank follows before reading anything
            decision = await_decision(folder, key)
            if decision["action"] != "skip":
                from harness.run.train import train_and_evaluate

                train_and_evaluate(spec, folder)
            return {"run_id": spec.run_id, "status": "secondary task", "decision": decision["action"],
                    "reason": decision.get("reason") or ""}
        lock = RunLock(folder)
        if not lock.acquire():
            write_decision(folder, key, "skip", "another process is running it")
            return {"run_id": spec.run_id, "status": "skipped", "reason": "another process is running it"}
        try:
            existing = row_path(self.results_dir, spec.run_id)
            why = "--force: the old row, checkpoints and curve deleted"
            if self.rerun_stale and not self.force:
                stale = self._stale(spec, existing)
                self.rerun_stale = False  # a requeued instance resumes this new attempt
                if stale:  # made by other code: redo it from scratch, like --force
                    self.force, why = True, f"--rerun-stale: stale ({stale}); the old row, checkpoints and curve deleted"
            marker = restart_marker(folder, self.attempt)
            if self.force and marker is not None and marker.exists():
                # this attempt restarted the run already: a requeue that reloaded the job as submitted (a
                # node failure, without submitit's checkpoint()) resumes what that restart trained
                self.force = False
            if self.force:  # redo from scratch: forget the old row, checkpoints and curve, before any rank reads
                existing.unlink(missing_ok=True)
                for path in folder.iterdir():
                    if path.name not in ("lock", decisions_dir(folder).name):
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
                self.force = False  # a requeued instance resumes this new attempt
                if marker is not None:  # ... and so does one that reloads the submitted job (force still set)
                    write_json_atomic(marker, {"attempt": self.attempt, "job_id": _job_id(), "reason": why,
                                               "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
                write_decision(folder, key, "restart", why)
                return self._execute(spec, folder)
            if existing.exists():
                try:
                    row = json.loads(existing.read_text())
                    if row.get("status") == "done":
                        write_decision(folder, key, "skip", "already done")
                        return row
                except (OSError, ValueError):
                    pass
            resume = (folder / "last_checkpoint").exists()
            write_decision(folder, key, "train", "resuming from its latest checkpoint" if resume else "")
            return self._execute(spec, folder)
        finally:
            lock.release()

    def _stale(self, spec: RunSpec, existing: Path) -> str:
        """What changed since the run's ``done`` row was made, or, for a run without one, since the starts
        that trained its latest checkpoint ("" when current, or nothing to resume): the same comparison as
        ``harness status`` and the plan (:func:`harness.run.fingerprint.staleness`). So ``--rerun-stale``
        does not resume an interrupted run from a checkpoint other code trained (its row would be stale)."""
        from harness.run.fingerprint import staleness

        try:
            row = json.loads(existing.read_text())
        except (OSError, ValueError):
            row = None
        if isinstance(row, dict) and row.get("status") == "done":
            return "; ".join(staleness(row, self.results_dir, spec)[0])
        folder = work_dir(self.results_dir, spec.run_id)
        if not (folder / "last_checkpoint").exists():
            return ""
        starts = read_starts(folder)
        if not starts:
            return "its checkpoint records no code it was trained by"
        for start in starts:
            fingerprint = start.get("fingerprint")
            reasons = (staleness({"fingerprint": fingerprint}, self.results_dir, spec)[0]
                       if isinstance(fingerprint, dict) else ["a start without a fingerprint"])
            if reasons:
                return f"its checkpoint was trained by other code ({'; '.join(reasons)})"
        return ""

    def _execute(self, spec: RunSpec, folder: Path) -> dict:
        from harness.run.train import RunFailed, on_training_start, train_and_evaluate

        started = time.time()
        restarts = _restarts()
        write_state(folder, state="running", job_id=_job_id(), pid=os.getpid(), host=socket.gethostname(),
                    started_at=started, restarts=restarts)
        row: dict[str, Any] = row_identity(spec)
        try:
            with on_training_start(lambda epoch, iteration, config: record_start(
                    folder, spec, self.attempt, epoch, iteration, config)):
                result = train_and_evaluate(spec, folder)
            row.update(status="done", reason=None, metrics=result.metrics, curve=result.curve,
                       per_class=result.per_class)
            if result.val_curve is not None:  # schedule.val_every
                row["val_curve"] = result.val_curve
            info = result.info
            info["timing"] = {"startup_s": _startup_s(self), **info.get("timing", {}), "finish_s": 0.0}
        except BaseException as exc:
            if getattr(self, "_interrupted", False):  # being requeued: whatever was raised, the run did not fail
                if not isinstance(exc, SystemExit):  # not submitit's exit after its requeue: say what ended it
                    print(f"harness: the run was being requeued (checkpoint() was called) when "
                          f"{type(exc).__name__} ended it; exiting without a row:\n{traceback.format_exc()}",
                          file=sys.stderr, flush=True)
                raise SystemExit(-1) from None
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not the run's fault either
                raise
            if isinstance(exc, RunFailed):
                row.update(status="failed", reason=str(exc), metrics={}, curve=exc.curve)
                info = exc.info
            else:  # the row records why; the job itself still ends normally
                tail = traceback.format_exc(limit=4)
                row.update(status="failed", reason=f"{type(exc).__name__}: {exc}", metrics={}, curve=[],
                           traceback=tail)
                info = {}
        finishing = time.time()
        # The code and loss modules this process loaded, and the config it trained (None: failed before),
        # with those of the earlier starts it resumed from when they differ
        starts = read_starts(folder)
        row["fingerprint"] = with_starts(recorded(spec, info.pop("config_digest", None)),
                                         [s.get("fingerprint") for s in starts])
        row["provenance"] = {
            **provenance(),
            **info,
            "process": _process_kind(spec.run_id),
            "allocator": allocator_in_use(),  # speed only: the same values with any (harness.run.allocator)
            "cpu_roi_align": _cpu_roi_align(),  # speed only: the same values with either kernel
            "cpu_sgd": _cpu_sgd(),  # speed only: the same values either way
            "attempt": self.attempt,
            "job_id": _job_id(),
            "host": socket.gethostname(),
            "hardware": hardware.describe(info.get("device")),  # what computed it (harness.run.hardware)
            "restarts": restarts,  # SLURM_RESTART_COUNT: how often SLURM requeued the job that wrote the row
            "resumes": max(0, len(starts) - 1),  # the starts after the first that trained this row
            "starts": [{k: v for k, v in s.items() if k != "fingerprint"}
                       | {"digest": (s.get("fingerprint") or {}).get("digest")} for s in starts],
            "wall_time_s": round(time.time() - started, 2),
            "finished_at": now_iso(),
        }
        if isinstance(row["provenance"].get("timing"), dict):
            row["provenance"]["timing"]["finish_s"] = round(time.time() - finishing, 3)
        write_row(self.results_dir, row)
        write_state(folder, state=row["status"], finished_at=time.time())
        return row

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: resubmit the same run; it resumes from its latest checkpoint."""
        self._interrupted = True
        return submitit.helpers.DelayedSubmission(RunJob(self.run, self.results_dir, self.force, self.attempt,
                                                         self.rerun_stale))


def _process_kind(run_id: str) -> str:
    """How this run's process started (the benchmark's timing reads it)."""
    if os.environ.get("HARNESS_LOCAL_RUN") == run_id:
        return "fork of the preloaded local worker"
    try:
        cluster = submitit.JobEnvironment().cluster
    except RuntimeError:
        return "the driver's process"
    return "the driver's process (debug executor)" if cluster == "debug" else f"submitit job ({cluster})"


def _startup_s(job: "RunJob") -> float | None:
    """Seconds from this process's start to the run's code (None in the driver's own process, where it
    would count whatever the driver did before)."""
    from harness.bench.benchmark_timing import process_started_at

    if _process_kind(job.spec.run_id).startswith("the driver"):
        return None
    return round(max(0.0, getattr(job, "_entered", time.time()) - process_started_at()), 3)


def provenance() -> dict:
    """Git commit and dirty flag of the harness, and the versions of the stack, as this process loaded
    them (:data:`harness.run.fingerprint.LOADED`, taken at import, not when the row is written)."""
    code = loaded_code()
    return {"git_commit": code["git_commit"], "git_dirty": code["git_dirty"], "versions": code["versions"]}
