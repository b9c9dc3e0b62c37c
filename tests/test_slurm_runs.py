"""Experiment runs through the real loopback SLURM cluster (slurm/up.sh): a spec as a job array, a
two-process distributed run (one node × 2 tasks, gloo on CPU), a cancelled run, and a preempted run that resumes from its checkpoint and ends with the same metrics as
an uninterrupted run with the same seed. Skipped, with the reason, where SLURM cannot run."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import time

import pytest
import yaml

from cli import harness
from harness.experiments.spec import load_spec
from harness.launch import slurm
from harness.launch.orchestrate import Request, launch
from harness.launch.status import experiment_status
from harness.rows import read_rows

pytestmark = pytest.mark.slow


def spec_file(tmp_path, name, losses=("focal", "rs"), epochs=1, iters=2):
    data = {
        "name": name,
        "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8},
        "profile": "tiny",
        "detectors": ["atss"],
        "losses": list(losses),
        "schedule": {"epochs": epochs, "max_iters_per_epoch": iters, "batch_per_gpu": 2},
        # time_min > 10: submitit counts a USR2 as a preemption, not a timeout
        "launch": {"executor": "slurm", "cluster": "local", "cpus_per_run": 1, "time_min": 20, "array_parallelism": 2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_spec_runs_as_a_job_array(slurm_cluster, tmp_path):
    spec = spec_file(tmp_path, "array")
    results = tmp_path / "results"
    proc = harness("run", str(spec), "--results", str(results), "--wait", "--timeout", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "submitted 2 run(s) as SLURM job arrays" in proc.stdout
    rows, _ = read_rows(results / "array")
    assert sorted(r["loss"] for r in rows) == ["focal", "rs"] and all(r["status"] == "done" for r in rows)
    array_ids = {r["provenance"]["job_id"].split("_")[0] for r in rows}
    assert len(array_ids) == 1 and all("_" in r["provenance"]["job_id"] for r in rows)  # one array, two tasks
    status = harness("status", str(results / "array"))
    assert "2 done" in status.stdout


def test_a_two_process_run_is_one_job_of_two_tasks_and_rank_0_writes_the_row(slurm_cluster, tmp_path):
    """The multi-GPU path (one node, one task per process, mmengine's distributed launch) on CPU: gloo."""
    path = spec_file(tmp_path, "ddp", losses=("alrp",), iters=5)
    data = yaml.safe_load(path.read_text())
    data["launch"].update(cpus_per_run=2, tasks_per_run=2)
    data["dataset"]["train_images"] = 20  # 5 iterations × 2 images × 2 processes
    path.write_text(yaml.safe_dump(data))
    (run,) = load_spec(path).runs()
    assert slurm.slurm_parameters(run)["tasks_per_node"] == 2
    results = tmp_path / "results"
    proc = harness("run", str(path), "--results", str(results), "--wait", "--timeout", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    (row,), corrupt = read_rows(results / "ddp")
    assert not corrupt and row["status"] == "done", row.get("reason")
    prov = row["provenance"]
    assert prov["world_size"] == 2 and prov["effective_batch"] == 4 and prov["num_train_images"] == 20
    assert "bbox_AP" in row["metrics"] and [p[0] for p in row["curve"]] == [5]  # 5 iterations, each of 4 images
    folder = results / "ddp" / "slurm" / prov["job_id"]
    outcomes = [pickle.loads(p.read_bytes()) for p in sorted(folder.glob("*_result.pkl"))]
    assert [o[1]["status"] for o in outcomes] == ["done", "secondary task"]  # two tasks: rank 0 wrote the row
    log = next(folder.glob("*_0_log.out")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log  # mmengine's count of processes


def test_queued_array_tasks_are_pending_not_lost(slurm_cluster, tmp_path):
    """squeue folds an array's pending tasks into one "N_[1-2]" line; each must still read as pending."""
    path = spec_file(tmp_path, "queued", losses=("focal", "rs", "ce"), epochs=20, iters=8)  # long: still running at 3 s
    data = yaml.safe_load(path.read_text())
    data["launch"]["array_parallelism"] = 1
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    results = tmp_path / "results" / "queued"
    jobs = [j for _, j in slurm.submit_slurm(spec, spec.runs(), results, force=False)]
    try:
        time.sleep(3)
        states = sorted(s.state for s in experiment_status(results)[0])
        assert "lost" not in states and states.count("pending") >= 2, states
    finally:
        subprocess.run(["scancel", jobs[0].job_id.split("_")[0]], timeout=30)
        deadline = time.time() + 120
        while time.time() < deadline and not all(j.done() for j in jobs):
            time.sleep(1)


def test_a_cancelled_run_is_reported(slurm_cluster, tmp_path):
    # Cancelled once its first checkpoint exists, and far from its end: a run of 20 x 3 steps once ended
    # before submitit's cached job state read RUNNING, and the cancel then found nothing to cancel.
    path = spec_file(tmp_path, "cancel", losses=("focal",), epochs=400, iters=3)
    data = yaml.safe_load(path.read_text())
    data["schedule"]["checkpoint_every"] = 400  # one checkpoint, at the end: no 400 saves
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    (run,) = spec.runs()
    results = tmp_path / "results" / "cancel"
    (job,) = [j for _, j in slurm.submit_slurm(spec, [run], results, force=False)]
    curve = results / "work" / run.run_id / "curve.json"  # written at the end of epoch 1
    deadline = time.time() + 300
    while time.time() < deadline and not curve.exists() and not job.done():
        time.sleep(0.2)
    assert curve.exists() and not job.done(), f"the run did not start training; job state {job.state}"
    subprocess.run(["scancel", job.job_id], check=True, timeout=30)
    deadline = time.time() + 120
    while time.time() < deadline:
        (st,), _ = experiment_status(results)
        if st.state == "lost":
            break
        time.sleep(2)
    assert st.state == "lost" and "CANCELLED" in st.reason, (st.state, st.reason)
    assert not read_rows(results)[0]  # no row: the rerun will pick it up


def test_a_preempted_run_resumes_and_matches_an_uninterrupted_one(slurm_cluster, tmp_path):
    # Long enough to be caught between its first and last checkpoint (3 epochs of 3 steps once took
    # 0.4 s: the run ended, and its epoch-1 checkpoint was rotated away, before the first poll).
    path = spec_file(tmp_path, "preempt", losses=("focal",), epochs=3, iters=40)
    data = yaml.safe_load(path.read_text())
    data["dataset"]["train_images"] = 80  # 40 steps of 2 images per epoch
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    (run,) = spec.runs()
    results = tmp_path / "results" / "preempt"
    (job,) = [j for _, j in slurm.submit_slurm(spec, [run], results, force=False)]
    first_ckpt = results / "work" / run.run_id / "epoch_1.pth"
    deadline = time.time() + 400
    while time.time() < deadline and not first_ckpt.exists() and not job.done():
        time.sleep(0.1)
    assert first_ckpt.exists() and not job.done(), f"no checkpoint after epoch 1; job state {job.state}"
    job._interrupt()  # what SLURM does on preemption: SIGTERM, then USR2 → checkpoint() → requeue
    deadline = time.time() + 600
    while time.time() < deadline and not (results / "runs" / f"{run.run_id}.json").exists():
        time.sleep(2)
    (row,), _ = read_rows(results)
    assert row["status"] == "done", row.get("reason")
    assert row["provenance"]["restarts"] >= 1  # SLURM_RESTART_COUNT: it was requeued

    # The same run, uninterrupted, on this machine: identical metrics.
    clean = tmp_path / "clean"
    proc = harness("run", str(path), "--executor", "debug", "--results", str(clean))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ref,), _ = read_rows(clean / "preempt")
    assert ref["status"] == "done" and ref["metrics"] == row["metrics"], ref.get("reason")
    assert [p[:2] for p in ref["curve"]] == [p[:2] for p in row["curve"]]


def test_a_second_run_with_held_jobs_submits_nothing(slurm_cluster, tmp_path, monkeypatch):
    """Idempotent submission: jobs waiting in the queue (held) hold no lock, yet a second `harness run`
    sees them in the manifest and squeue, says they are queued and submits nothing."""
    spec = spec_file(tmp_path, "held")
    results = tmp_path / "results"
    # the first submission, through the harness's own path, with sbatch --hold: none can start before the
    # hold (on this 2-core cluster they would start at once; SLURM 22.05 has no SBATCH_HOLD variable)
    parameters = slurm.slurm_parameters
    monkeypatch.setattr(slurm, "slurm_parameters",
                        lambda run: {**parameters(run), "slurm_additional_parameters": {"hold": True}})
    first = io.StringIO()
    launch(Request(spec=spec, results_root=results), out=lambda m: print(m, file=first))
    monkeypatch.setattr(slurm, "slurm_parameters", parameters)
    assert "submitted 2 run(s)" in first.getvalue(), first.getvalue()
    manifest = json.loads((results / "held" / "manifest.json").read_text())
    job_ids = sorted(e["job_id"] for e in manifest["runs"].values())
    array = job_ids[0].split("_")[0]
    try:
        subprocess.run(["scontrol", "hold", array], check=True, timeout=30, capture_output=True)
        second = harness("run", str(spec), "--results", str(results))
        assert second.returncode == 0, second.stderr[-2000:]
        assert "held: 2 runs; 0 to run, 0 already done, 2 queued, 0 running" in second.stdout, second.stdout
        assert "submitted 0 run(s)" in second.stdout
        after = json.loads((results / "held" / "manifest.json").read_text())
        assert len(after["submissions"]) == 1 and sorted(e["job_id"] for e in after["runs"].values()) == job_ids
        forced = harness("run", str(spec), "--results", str(results), "--force", "--dry-run")
        assert forced.stdout.count("queued   ") == 2 and "JobHeld" in forced.stdout  # --force: still not resubmitted
        status = harness("status", str(results / "held"))
        assert "2 pending" in status.stdout, status.stdout
    finally:
        subprocess.run(["scancel", array], timeout=30)
    deadline = time.time() + 120
    while time.time() < deadline and subprocess.run(["squeue", "-h", "-j", array], capture_output=True,
                                                     text=True).stdout.strip():
        time.sleep(1)
    assert "0 queued" in harness("run", str(spec), "--results", str(results), "--dry-run").stdout


def test_own_coco_format_data_trains_through_slurm_from_the_spec_folders_paths(slurm_cluster, tmp_path):
    """A SLURM job reads your own data where the spec named it, relative to the spec's folder: the run
    spec carries the resolved paths, so the job (another process, another working folder) finds them."""
    from coco_format_data import spec as own_spec, write_dataset

    write_dataset(tmp_path / "data", train_images=8, val_images=4)
    data = own_spec("own", {"train": "data/train.json", "val": "data/val.json", "images": "data/images"}, ["atss"])
    data["launch"].update(executor="slurm", cluster="local")
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    results = tmp_path / "results"
    proc = harness("run", str(path), "--results", str(results), "--wait", "--timeout", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "submitted 1 run(s) as SLURM job arrays" in proc.stdout
    (row,), corrupt = read_rows(results / "own")
    assert not corrupt and row["status"] == "done", row.get("reason")
    assert row["dataset"]["train"]["ann"] == str(tmp_path / "data" / "train.json")
    assert "bbox_AP" in row["metrics"] and row["per_class"]  # evaluated on the file's own classes
