"""The SLURM side of launching, through the real loopback cluster (slurm/up.sh) and submitit.

Cluster tests use the session fixture ``slurm_cluster`` (tests/conftest.py), which installs and starts
the cluster once and skips them, with the reason, where that is impossible. Every wait has a timeout:
a job that does not finish in time is cancelled and the test fails with its state and log.
Profile tests need no cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.core.utils import UncompletedJobError

from harness.launch.cluster import (
    ClusterUnavailable,
    ProfileError,
    available_profiles,
    load_profile,
    local_cluster_env,
    profile_from_dict,
)

# The jobs unpickle this module's functions in a fresh interpreter that cannot import it (tests/ is
# not a package on sys.path there): ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

slurm = pytest.mark.slow


# -- callables run as jobs ----------------------------------------------------------------------------


def square_in_array(x: int) -> tuple[int, int]:
    return x * x, int(os.environ["SLURM_ARRAY_TASK_ID"])


def mark_then_sleep(marker: str, seconds: float) -> str:
    Path(marker).write_text(os.environ.get("SLURM_JOB_ID", "?"))
    time.sleep(seconds)
    return "finished although cancelled"


class SumOfSquares(submitit.helpers.Checkpointable):
    """Sums i*i for i < n, one step every step_s seconds, saving its progress after each step.

    Every start appends ``<SLURM_RESTART_COUNT> <steps already done>`` to starts.txt. ``checkpoint``
    (called by submitit on preemption) returns a fresh instance resuming from the saved progress.
    """

    def __init__(self, n: int, workdir: str, step_s: float = 0.25, resume: dict | None = None) -> None:
        self.n, self.workdir, self.step_s, self.resume = n, workdir, step_s, resume

    def __call__(self) -> int:
        work = Path(self.workdir)
        done, total = (self.resume["done"], self.resume["total"]) if self.resume else (0, 0)
        with open(work / "starts.txt", "a") as f:
            f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')} {done}\n")
        for i in range(done, self.n):
            total += i * i
            tmp = work / "progress.json.tmp"
            tmp.write_text(json.dumps({"done": i + 1, "total": total}))
            os.replace(tmp, work / "progress.json")  # a checkpoint never reads half a file
            time.sleep(self.step_s)
        return total

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        progress = json.loads((Path(self.workdir) / "progress.json").read_text())
        return submitit.helpers.DelayedSubmission(SumOfSquares(self.n, self.workdir, self.step_s, resume=progress))


# -- helpers ---------------------------------------------------------------------------------------------


def make_executor(folder: Path, **params) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(**{"timeout_min": 5, "slurm_partition": "debug", "cpus_per_task": 1, **params})
    return executor


def describe(jobs) -> str:
    lines = []
    for job in jobs:
        log = (job.stderr() or "")[-1500:]
        lines.append(f"job {job.job_id}: state {job.state}\n{log}")
    return "\n".join(lines)


def wait_done(jobs, timeout: float) -> None:
    """Wait until every job is done (result file or a final sacct state); on timeout cancel them and fail."""
    deadline = time.monotonic() + timeout
    while True:
        jobs[0].watcher.update()  # one sacct call for all jobs, then the cached states
        if all(job.done() for job in jobs):
            return
        if time.monotonic() > deadline:
            message = describe(jobs)
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"jobs not done after {timeout:.0f}s:\n{message}")
        time.sleep(1)


def wait_for(predicate, timeout: float, job, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            job.watcher.update()
            message = describe([job])
            job.cancel(check=False)
            pytest.fail(f"{what} not seen after {timeout:.0f}s:\n{message}")
        time.sleep(0.2)


# -- cluster tests ---------------------------------------------------------------------------------------


@slurm
def test_cluster_has_the_local_profile_partitions(slurm_cluster):
    assert local_cluster_env()["SLURM_CONF"] == slurm_cluster["SLURM_CONF"]
    sinfo = ["sinfo", "-h", "-o", "%R %T"]
    out = subprocess.run(sinfo, capture_output=True, text=True, timeout=30, check=True).stdout
    partitions = dict(line.split() for line in out.splitlines())
    assert set(load_profile("local").partitions.values()) <= set(partitions), out
    assert partitions["debug"] in {"idle", "mixed", "allocated", "completing"}, out


@slurm
def test_job_array_returns_every_result(slurm_cluster, tmp_path):
    executor = make_executor(tmp_path, slurm_array_parallelism=2)
    jobs = executor.map_array(square_in_array, range(6))
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_{i}" for i in range(6)]
    wait_done(jobs, timeout=90)
    assert [job.result() for job in jobs] == [(i * i, i) for i in range(6)]


@slurm
def test_cancelled_job_is_reported_cancelled(slurm_cluster, tmp_path):
    marker = tmp_path / "started"
    job = make_executor(tmp_path).submit(mark_then_sleep, str(marker), 300)
    wait_for(marker.exists, 60, job, "the job's start")
    job.cancel(check=True)
    wait_done([job], timeout=60)
    assert job.state.startswith("CANCELLED"), describe([job])
    job._results_timeout_s = 2  # submitit waits 15 s for a result file that a cancelled job never writes
    with pytest.raises(UncompletedJobError):
        job.result()


@slurm
def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    n = 24
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    expected = SumOfSquares(n, str(reference), step_s=0)()
    assert expected == sum(i * i for i in range(n))

    work = tmp_path / "preempted"
    work.mkdir()
    # timeout_min > 10: submitit counts the USR2 as a preemption, not as a timeout (see docs/slurm.md).
    job = make_executor(tmp_path, timeout_min=15).submit(SumOfSquares(n, str(work)))
    progress = work / "progress.json"

    def four_steps_done() -> bool:
        return progress.exists() and json.loads(progress.read_text())["done"] >= 4

    wait_for(four_steps_done, 60, job, "4 steps of progress")
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 to the job
    wait_done([job], timeout=120)
    assert job.result() == expected, describe([job])

    starts = [tuple(map(int, line.split())) for line in (work / "starts.txt").read_text().splitlines()]
    assert starts[0] == (0, 0), starts
    assert len(starts) >= 2, f"the job was not restarted: {starts}\n{describe([job])}"
    restart_count, resumed_at = starts[-1]
    assert restart_count >= 1 and resumed_at >= 4, f"did not resume from its checkpoint: {starts}"
    assert "this job is preempted" in (job.stderr() or ""), describe([job])


# -- profiles (no cluster needed) --------------------------------------------------------------------


def test_bundled_profiles_load_and_give_valid_submitit_parameters(tmp_path):
    assert {"local", "example-a100", "example-v100"} <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.name == name
        assert load_profile(profile.source) == profile  # by path as by name
        for gpus in sorted({0, profile.gpus_per_node}):
            params = profile.executor_parameters(gpus=gpus)
            executor = submitit.AutoExecutor(folder=tmp_path / name, cluster="slurm")
            executor.update_parameters(**params)  # raises on a parameter submitit does not know
            assert params["slurm_partition"] == profile.partition
    a100 = load_profile("example-a100").executor_parameters(gpus=4, partition="debug", time_min=60)
    assert a100["slurm_gres"] == "gpu:a100:4" and a100["slurm_partition"] == "gpu-dev"
    assert a100["cpus_per_task"] == 32 and a100["mem_gb"] == 480
    assert load_profile("example-v100").executor_parameters(gpus=8)["gpus_per_node"] == 8


def test_profile_errors_say_what_is_wrong(tmp_path):
    base = {"name": "x", "partitions": {"default": "gpu"}}
    with pytest.raises(ProfileError, match=r"unknown key\(s\) 'partiton'.*valid keys: .*partitions"):
        profile_from_dict({**base, "partiton": "gpu"})
    with pytest.raises(ProfileError, match="did you mean 'cpus_per_gpu'"):
        profile_from_dict({**base, "cpu_per_gpu": 8})
    with pytest.raises(ProfileError, match="needs a 'default' entry"):
        profile_from_dict({"name": "x", "partitions": {"debug": "dev"}})
    with pytest.raises(ProfileError, match="'gpus_per_node' must be an integer >= 0"):
        profile_from_dict({**base, "gpus_per_node": -1})
    with pytest.raises(ProfileError, match=r"must contain '\{gpus\}'"):
        profile_from_dict({**base, "gres": "gpu:a100"})
    with pytest.raises(ProfileError, match="exceeds 'max_time_min'"):
        profile_from_dict({**base, "time_min": 120, "max_time_min": 60})
    profile = profile_from_dict({**base, "gpus_per_node": 2})
    with pytest.raises(ProfileError, match="asks for 4 GPU"):
        profile.executor_parameters(gpus=4)
    with pytest.raises(ProfileError, match="no partition 'long'"):
        profile.executor_parameters(partition="long")
    with pytest.raises(ProfileError, match="no cluster profile 'nowhere'.*available: .*local"):
        load_profile("nowhere")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\npartitions: {default: gpu}\ngpus: 4\n")
    with pytest.raises(ProfileError, match=rf"{bad}: unknown key\(s\) 'gpus'"):
        load_profile(bad)
    bad.write_text("name: bad\npartitions: {default: gpu\naccount: x\n")  # the brace left open
    with pytest.raises(ProfileError) as err:
        load_profile(bad)
    assert str(err.value) == f"{bad}: not valid YAML at line 3: expected ',' or '}}', but got ':'"


def test_local_cluster_env_reports_a_cluster_that_is_not_up(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_SLURM_DIR", str(tmp_path))
    with pytest.raises(ClusterUnavailable, match="not running.*make slurm-up"):
        local_cluster_env()
