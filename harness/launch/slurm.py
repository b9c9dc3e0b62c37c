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
from harness.launch.plan import group_by_resources
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


def submit_slurm(spec: Spec, runs: list[RunSpec], results_dir: Path, force: bool, attempt: str | None = None,
                 rerun_stale: bool = False) -> list:
    """Submit ``runs`` (one job array per resource shape); returns ``[(run, submitit job)]``."""
    import submitit

    jobs = []
    for _, group in group_by_resources(runs).items():
        # long trainings are resumed across many preemptions / timeouts
        executor = submitit.AutoExecutor(folder=results_dir / "slurm" / "%j", cluster="slurm", slurm_max_num_timeout=20)
        executor.update_parameters(name=f"{spec.name}", **slurm_parameters(group[0]))
        with executor.batch():
            group_jobs = [executor.submit(RunJob(run, results_dir, force, attempt, rerun_stale)) for run in group]
        jobs.extend(zip(group, group_jobs))
    record_submission(results_dir, spec, "slurm", {run.run_id: job.job_id for run, job in jobs}, attempt=attempt)
    return jobs
