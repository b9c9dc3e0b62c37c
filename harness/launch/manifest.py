"""``results/<experiment>/manifest.json``: what was submitted, where and when (the launch's own record).

One module reads and writes it. Written at each submission (SLURM, a local pool) and when a local pool
ends a run; read by the plan (which runs are queued somewhere) and by ``harness status``. Results never
read it: the tables read rows only. A manifest that cannot be read counts as empty, with a warning
naming the file (the next submission writes a whole new one, atomically).

Every change is a read-modify-write under an exclusive ``flock`` on ``manifest.json.lock`` beside it
(:func:`update_manifest`), so concurrent submissions (two ``harness run`` of one spec, a background pool
and a driver) never lose each other's entries. Readers take no lock: the file is replaced atomically.
A submission plans and records under a second lock, ``submit.lock`` (:func:`submitting`): two
``harness run`` started at once submit each run once between them.

Format: ``{"experiment", "spec", "submissions": [{"at", "executor", "runs", "attempt"}], "runs": {run_id:
{"detector", "loss", "seed", "dataset", "executor", "job_id", "submitted_at", "attempt", "pool",
"ended_at"}}}``: ``job_id`` is the SLURM job (None elsewhere), ``attempt`` the submission's token (rows
record it, so its own outcome is told from older rows), ``pool`` the id of the local pool that runs it
(alive while that pool's lock is held; see :mod:`harness.launch.local`) and ``ended_at`` when that pool
ended it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from harness.files import FILE_MODE, write_json_atomic

FILE = "manifest.json"


def manifest_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / FILE


def read_manifest(results_dir: str | Path) -> dict:
    """The manifest of an experiment folder (empty when there is none, or it cannot be read)."""
    path = manifest_path(results_dir)
    empty = {"runs": {}, "submissions": []}
    if not path.exists():
        return empty
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("runs", {}), dict):
            raise ValueError("not a manifest (no 'runs' mapping)")
    except (OSError, ValueError) as exc:
        warnings.warn(f"manifest {path} cannot be read ({exc}); treated as empty", stacklevel=2)
        return empty
    data.setdefault("runs", {})
    data.setdefault("submissions", [])
    return data


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (blocks until free; freed when the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)  # the umask decides
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def submitting(results_dir: str | Path):
    """Held from a submission's plan until its runs are recorded (``submit.lock``): a concurrent
    submission plans after this one's runs are in the manifest, so it sees them queued."""
    return _flock(Path(results_dir) / "submit.lock")


def update_manifest(results_dir: str | Path, change: Callable[[dict], None]) -> Path:
    """Apply ``change`` (which edits the manifest in place) under the manifest's lock, then write it."""
    with _flock(manifest_path(results_dir).with_name(FILE + ".lock")):
        manifest = read_manifest(results_dir)
        change(manifest)
        return write_json_atomic(manifest_path(results_dir), manifest)


def record_submission(results_dir: str | Path, spec, executor: str, jobs: Mapping[str, str | None], *,
                      attempt: str | None = None, pool: str | None = None) -> Path:
    """Add a submission of ``jobs`` (run id → job id, None where the executor has none) of ``spec``;
    ``attempt``: the submission's token; ``pool``: the local pool that runs them."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    by_id = {r.run_id: r for r in spec.runs()}

    def add(manifest: dict) -> None:
        manifest.update(experiment=spec.name, spec=str(spec.path) if spec.path else None)
        manifest["submissions"].append({"at": now, "executor": executor, "runs": len(jobs), "attempt": attempt})
        for run_id, job_id in jobs.items():
            r = by_id[run_id]
            entry = {"detector": r.detector, "loss": r.loss, "seed": r.seed, "dataset": dict(r.dataset),
                     "executor": executor, "job_id": job_id, "submitted_at": now, "attempt": attempt}
            if pool is not None:
                entry["pool"] = pool
            manifest["runs"][run_id] = entry

    return update_manifest(results_dir, add)


def record_ended(results_dir: str | Path, run_id: str, pool: str) -> Path:
    """A local pool ended ``run_id`` (finished, failed or stepped aside): it is no longer queued there.
    An entry a later submission replaced (another pool) is left alone."""

    def end(manifest: dict) -> None:
        entry = manifest["runs"].get(run_id)
        if entry is not None and entry.get("pool") == pool:
            entry["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")

    return update_manifest(results_dir, end)
