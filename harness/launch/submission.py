"""The SLURM submission of a spec's runs, built once: what the dry run prints is what is submitted.

:func:`build_arrays` groups the runs by resources into job arrays and builds, for each, the keyword
arguments of submitit's ``AutoExecutor.update_parameters`` from the run's launch section and its cluster
profile (:func:`slurm_parameters`), and the ``#SBATCH`` options submitit renders from them
(:meth:`Array.sbatch_options`: partition by its real name, account, GPUs, CPUs, memory, time, the array's
size and parallelism, the signal that requeues a job before its limit). Each array carries its
problems (:meth:`harness.launch.cluster.ClusterProfile.problems`: an unknown profile with the available
ones, more GPUs, CPUs or memory than a node has, a time over the partition's limit, a placeholder
account), one line each. ``harness run`` refuses every problem before anything is submitted (exit 2);
:func:`submit_arrays` submits the arrays in order and stops at the first that ``sbatch`` refuses
(:class:`SubmissionError` naming the array; the arrays before it are in the manifest).

Requeue: submitit's job script traps the signal (``--signal=USR2@N``, N seconds before the limit, and
on preemption) and calls the run's ``checkpoint``: the job requeues itself, at most
:data:`MAX_TIMEOUTS` times, and resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.experiments.spec import RunSpec
from harness.launch.cluster import ClusterProfile, ProfileError, load_profile

#: How many times a run's job may time out and requeue itself (submitit's ``slurm_max_num_timeout``).
MAX_TIMEOUTS = 20
#: #SBATCH options that name log files, not resources (left out of the printed line; logs go to
#: ``results/<experiment>/slurm/<job id>/``).
_LOG_OPTIONS = ("--output", "--error", "--open-mode", "--wckey")


class SubmissionError(ValueError):
    """A submission that cannot go ahead, or that sbatch refused; one line saying which array and why."""


def override_launch(spec, **values):
    """``spec`` with launch keys set for every run (``--cluster``, ``--partition``, ``--account``; None
    keeps the spec's): the spec's launch section and each detector override's."""
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return spec
    overrides = {det: {**over, "launch": {k: v for k, v in over.get("launch", {}).items() if k not in values}}
                 for det, over in spec.overrides.items()}
    return dataclasses.replace(spec, launch={**spec.launch, **values}, overrides=overrides)


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which SLURM signals the job to checkpoint and requeue."""
    return 120 if time_min > 10 else 30


def slurm_parameters(run: RunSpec, profile: ClusterProfile | None = None) -> dict:
    """submitit parameters of ``run``'s job (``profile``: its cluster's, loaded when not given). Built
    whatever the problems (the dry run shows them beside the parameters); :func:`build_arrays` checks."""
    launch = run.launch
    profile = profile or load_profile(launch["cluster"])
    gpus = launch["gpus_per_run"]
    params = profile.executor_parameters(gpus=gpus, time_min=launch["time_min"], partition=launch["partition"],
                                         check=False)
    params["slurm_array_parallelism"] = launch["array_parallelism"]
    params["slurm_signal_delay_s"] = signal_delay_s(launch["time_min"])
    if launch.get("account"):
        params["slurm_account"] = launch["account"]
    tasks = run.world_size
    if tasks > 1:  # one task per GPU (or per CPU share) on one node; mmengine's distributed launch inside
        params["tasks_per_node"] = tasks
        params["cpus_per_task"] = max(1, launch["cpus_per_run"] // tasks)
    elif "cpus_per_task" in params or not gpus:
        params["cpus_per_task"] = launch["cpus_per_run"]
    if profile.mem_gb is not None or gpus:
        params["mem_gb"] = launch["mem_gb"]
    return params


@dataclasses.dataclass
class Array:
    """One job array: its runs, its cluster profile (None when it does not load), the submitit
    parameters, and what is wrong with them (one line each)."""

    index: int  # 1-based, in submission order
    runs: list[RunSpec]
    cluster: str
    profile: ClusterProfile | None
    params: dict[str, Any]
    problems: list[str]

    @property
    def gpus(self) -> int:
        return self.runs[0].launch["gpus_per_run"]

    @property
    def time_min(self) -> int:
        return self.runs[0].launch["time_min"]

    def sbatch_options(self, job_name: str = "harness", folder: str | Path = "results/slurm/%j") -> list[str]:
        """The ``#SBATCH`` options submitit writes for this array (log-file options left out)."""
        if self.profile is None:
            return []
        from unittest import mock

        import submitit
        from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

        # submitit refuses to build its SLURM executor where `srun` is not on PATH (a laptop, a CI machine
        # without SLURM), but only the text it would write is wanted here: the dry run shows the submission
        # anywhere
        with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(name=job_name, **self.params)
        text = _make_sbatch_string(command="true", folder=folder, map_count=len(self.runs),
                                   **executor._executor.parameters)
        options = [line[len("#SBATCH "):] for line in text.splitlines() if line.startswith("#SBATCH ")]
        return [o for o in options if not o.startswith(_LOG_OPTIONS)]

    def describe(self, job_name: str, total: int) -> list[str]:
        """The array as the dry run prints it: a heading, the sbatch options, set-up lines and requeue."""
        where = f"cluster {self.cluster}" + (f" ({self.profile.source})" if self.profile and self.profile.source else "")
        out = [f"  array {self.index} of {total}: {len(self.runs)} run(s), {self.runs[0].world_size} process(es) "
               f"per run, {where}"]
        if self.profile is None:
            return out
        out.append("    sbatch " + " ".join(self.sbatch_options(job_name)))
        for line in self.params.get("slurm_setup", []):
            out.append(f"    set-up: {line}")
        delay = self.params["slurm_signal_delay_s"]
        out.append(f"    requeue: on preemption, or {delay} s before the {self.time_min} min limit, the job requeues "
                   f"itself (at most {MAX_TIMEOUTS} times) and resumes from its last checkpoint")
        return out


def build_arrays(runs: Iterable[RunSpec]) -> list[Array]:
    """The job arrays of ``runs`` (one per resource shape, in the order the runs come), each checked."""
    groups: dict[tuple, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.resources, []).append(run)
    arrays = []
    for index, group in enumerate(groups.values(), start=1):
        launch = group[0].launch
        try:
            profile = load_profile(launch["cluster"])
        except ProfileError as exc:
            arrays.append(Array(index, group, launch["cluster"], None, {}, [f"array {index}: {exc}"]))
            continue
        try:
            params = slurm_parameters(group[0], profile)
        except ProfileError as exc:  # a partition the profile does not name: nothing to build the array from
            arrays.append(Array(index, group, launch["cluster"], None, {}, [f"array {index}: {exc}"]))
            continue
        if launch.get("account"):
            profile = dataclasses.replace(profile, account=launch["account"])
        cpus = params.get("cpus_per_task", 1) * params.get("tasks_per_node", 1)
        problems = profile.problems(gpus=launch["gpus_per_run"], minutes=launch["time_min"],
                                    partition=launch["partition"], cpus=cpus, mem_gb=params.get("mem_gb"))
        arrays.append(Array(index, group, launch["cluster"], profile, params, [f"array {index}: {p}" for p in problems]))
    return arrays


def problems(arrays: Iterable[Array]) -> list[str]:
    """Every array's problems, one line each, each said once."""
    out: list[str] = []
    for array in arrays:
        out += [p for p in array.problems if p.split(": ", 1)[1] not in {q.split(": ", 1)[1] for q in out}]
    return out


def submit_arrays(arrays: list[Array], job_name: str, folder: Path, make_job: Callable[[RunSpec], Any],
                  on_submitted: Callable[[list[tuple[RunSpec, Any]]], None]) -> list[tuple[RunSpec, Any]]:
    """Submit ``arrays`` in order through submitit; ``on_submitted`` gets each array's (run, job) pairs
    once it is submitted (the manifest). Raises :class:`SubmissionError` before submitting anything when an
    array has a problem, and at the first array sbatch refuses (nothing after it is submitted)."""
    import submitit

    found = problems(arrays)
    if found:
        raise SubmissionError(found[0] + (f" (and {len(found) - 1} more problem(s): see --dry-run)"
                                          if len(found) > 1 else ""))
    submitted: list[tuple[RunSpec, Any]] = []
    for array in arrays:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(name=job_name, **array.params)
        before = _files(folder)
        try:  # submitit prints sbatch's stderr before raising with it: said once, in the error below
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                jobs = [executor.submit(make_job(run)) for run in array.runs]
        except Exception as exc:  # sbatch's refusal (submitit's FailedJobError / CalledProcessError)
            _remove_new(folder, before)  # the refused array's pickled jobs and sbatch script: no job reads them
            reason = _first_line(exc)
            before = (f"array(s) 1-{array.index - 1} ({len(submitted)} run(s)) were submitted and are in the manifest"
                      if submitted else "nothing was submitted")
            raise SubmissionError(f"sbatch refused array {array.index} of {len(arrays)} ({len(array.runs)} run(s), "
                                  f"partition {array.params.get('slurm_partition')}): {reason}; {before}; "
                                  f"the arrays after it were not submitted") from None
        submitted += list(zip(array.runs, jobs))
        on_submitted(list(zip(array.runs, jobs)))
    return submitted


def _files(folder: Path) -> set[Path] | None:
    """The paths under ``folder`` now (None: it does not exist)."""
    return set(folder.rglob("*")) if folder.is_dir() else None


def _remove_new(folder: Path, before: set[Path] | None) -> None:
    """Remove what was written under ``folder`` since :func:`_files` gave ``before`` (the folder too when
    it did not exist then)."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in sorted(set(folder.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    """sbatch's own message out of submitit's error (its stderr's ``sbatch: error:`` line when there is one)."""
    text = str(exc)
    for attr in ("stderr", "output"):
        value = getattr(exc, attr, None)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if value:
            text = value + "\n" + text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and "sbatch" in line.lower():
            return line
    return lines[0] if lines else type(exc).__name__
