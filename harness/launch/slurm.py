"""The SLURM executor: a spec's runs submitted as submitit job arrays.

Runs are grouped by resources into one job array each (``slurm_array_parallelism`` = the spec's
``array_parallelism``); a run of T > 1 processes (``world_size``: one per GPU, or ``tasks_per_run`` on
CPU) is one node with T tasks, mmengine's distributed launch inside the job. Every submitted run is
recorded in the manifest with its job id and the submission's attempt, which is how a later ``harness
run`` sees it queued (:mod:`harness.launch.scheduler`). Site settings come from the spec's cluster
profile (:mod:`harness.launch.cluster`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.experiments.spec import RunSpec, Spec
from harness.launch.manifest import record_submission
from harness.run.job import RunJob


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


def slurm_parameters(run: RunSpec) -> dict:
    """submitit parameters of a run's job (:func:`harness.launch.submission.slurm_parameters`)."""
    from harness.launch.submission import slurm_parameters as build

    return build(run)


def submit_slurm(spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool, attempt: str | None = None,
                 rerun_stale: bool = False) -> list:
    """Submit ``runs`` (one job array per resource shape: :mod:`harness.launch.submission`, checked first,
    stopping at the first array sbatch refuses); the manifest records every array submitted. Returns
    ``[(run, submitit job)]``."""
    from harness.launch.submission import build_arrays, submit_arrays

    def record(submitted):
        record_submission(results_dir, spec, "slurm", {run.run_id: job.job_id for run, job in submitted},
                          attempt=attempt)

    return submit_arrays(build_arrays(runs), spec.name, results_dir / "slurm",
                         lambda run: RunJob(run, results_dir, force, attempt, rerun_stale), record)
