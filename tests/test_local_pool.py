"""The local pool: a single-process run is a fork of a server that imported the training stack once.

Real (tiny) runs through `harness run --executor local --wait`, as a user starts them: rows as before,
each with its phase timing and how its process started; each run's output in its own log; a run whose
process dies without writing a row gets a ``failed`` row that says so, with its own reason (not an older
row's), and `--wait` / `harness benchmark` report the runs they ran, exit 1 when one failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cli import harness
from harness.bench.benchmark_timing import PHASES
from harness.experiments.spec import load_spec
from harness.rows import read_rows, write_row
from harness.run.job import row_identity

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def spec_file(folder: Path, name: str, losses=("focal", "rs"), modules=()) -> Path:
    data = {"name": name, "loss_modules": list(modules),
            "dataset": {"kind": "synthetic", "train_images": 16, "val_images": 8}, "profile": "tiny",
            "detectors": ["atss"], "losses": list(losses),
            "schedule": {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2},
            "launch": {"executor": "local", "cpus_per_run": 1, "time_min": 20}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_runs_are_forks_of_the_preloaded_worker_with_their_timing_and_logs(tmp_path, monkeypatch):
    """... with tcmalloc preloaded where installed (each row says which allocator its process had), and the
    same values bit for bit with the C library's malloc (HARNESS_ALLOCATOR=system)."""
    from harness.run import hardware
    from harness.run.allocator import library

    results = tmp_path / "results"
    proc = harness("run", str(spec_file(tmp_path, "pool")), "--executor", "local", "--wait", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, corrupt = read_rows(results / "pool")
    assert not corrupt and sorted(r["loss"] for r in rows) == ["focal", "rs"]
    monkeypatch.setenv("HARNESS_ALLOCATOR", "system")
    proc = harness("run", str(spec_file(tmp_path, "pool")), "--executor", "local", "--wait", "--results",
                   str(tmp_path / "system"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    system = {r["run_id"]: r for r in read_rows(tmp_path / "system" / "pool")[0]}
    monkeypatch.delenv("HARNESS_ALLOCATOR")
    tcmalloc = library()
    for row in rows:
        assert row["status"] == "done" and "bbox_AP" in row["metrics"]
        prov = row["provenance"]
        assert prov["allocator"] == (os.path.basename(os.path.realpath(tcmalloc)) if tcmalloc else "system")
        other = system[row["run_id"]]
        assert other["provenance"]["allocator"] == "system"
        assert other["metrics"] == row["metrics"] and other["curve"] == row["curve"]
        assert prov["process"] == "fork of the preloaded local worker"
        assert prov["hardware"] == hardware.describe("cpu") and prov["hardware"].startswith("CPU ")
        assert set(prov["timing"]) == {f"{p}_s" for p in PHASES}
        assert all(v >= 0 for v in prov["timing"].values())
        log = results / "pool" / "local" / row["run_id"] / "log.txt"
        assert "Epoch(train)" in log.read_text()  # mmengine's output went to the run's own log


def test_a_run_whose_process_dies_reports_its_own_reason_and_wait_reports_only_what_it_ran(tmp_path):
    """Findings 3, 4 and 8: with an older done row and an older failed row, `--wait` reruns the failed run,
    waits for it, reports its own reason (the process died: exit code 3) and nothing of the older rows;
    `harness benchmark` exits 1, listing it."""
    module = tmp_path / "dies_in_worker.py"
    example = (REPO / "examples" / "quality_focal.py").read_text().replace('name="qfl"', 'name="dies"')
    module.write_text(example + "\nimport os\n\nif os.environ.get('HARNESS_LOCAL_RUN'):  # in the run's process\n"
                      "    os._exit(3)\n")
    results = tmp_path / "results"
    spec = spec_file(tmp_path, "dies", losses=("focal", "dies"), modules=(str(module),))
    focal, dies = load_spec(spec).runs()
    write_row(results / "dies", {**row_identity(focal), "status": "done", "metrics": {"bbox_AP": 0.25}, "curve": [],
                                 "provenance": {"attempt": "older"}})
    write_row(results / "dies", {**row_identity(dies), "status": "failed", "reason": "an older failure",
                                 "metrics": {}, "curve": [], "provenance": {"attempt": "older"}})
    proc = harness("run", str(spec), "--executor", "local", "--wait", "--results", str(results))
    assert proc.returncode == 1, proc.stderr[-3000:]
    own = "the run's process ended without a row (exit code 3)"
    rows = {r["run_id"]: r for r in read_rows(results / "dies")[0]}
    assert rows[dies.run_id]["status"] == "failed" and rows[dies.run_id]["reason"] == own
    assert rows[focal.run_id]["provenance"]["attempt"] == "older"  # the done run was left alone
    assert f"started  {dies.run_id}" in proc.stderr and f"started  {focal.run_id}" not in proc.stderr
    assert f"failed: {dies.run_id}: {own}" in proc.stderr and "an older failure" not in proc.stderr + proc.stdout
    assert "waited for 1 run(s): 0 done, 1 failed" in proc.stdout

    bench = harness("benchmark", str(spec), "--executor", "local", "--results", str(results))
    assert bench.returncode == 1, bench.stdout[-2000:] + bench.stderr[-2000:]
    assert f"failed: {dies.run_id}: {own}" in bench.stdout and "1 run(s) failed" in bench.stdout
    assert (results / "dies" / "tables" / "tables.md").exists()  # the tables are built from what finished


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_the_pool_wakes_when_a_forked_run_ends_not_at_its_next_poll():
    """A slot is refilled as soon as its run's process ends: the pool's wait returns on the end of a forked
    run, well before its timeout (here 30 s), and sleeps the timeout out while no forked run ends."""
    import multiprocessing
    import time

    from harness.launch.local import _Forked, _wait_for_an_end

    ctx = multiprocessing.get_context("fork")
    handle = _Forked.__new__(_Forked)
    handle.process = ctx.Process(target=_sleep, args=(0.3,))
    handle.process.start()
    start = time.monotonic()
    _wait_for_an_end([(None, handle)], 30.0)
    assert time.monotonic() - start < 10  # woken by the end (a poll would have slept the 30 s)
    handle.process.join()
    start = time.monotonic()
    _wait_for_an_end([(None, handle)], 30.0)  # an ended process's sentinel stays ready
    assert time.monotonic() - start < 10
    long = _Forked.__new__(_Forked)
    long.process = ctx.Process(target=_sleep, args=(5,))
    long.process.start()
    start = time.monotonic()
    _wait_for_an_end([(None, long)], 0.3)  # nothing ends: the timeout
    assert 0.25 <= time.monotonic() - start < 4
    long.process.kill()
    long.process.join()


def test_a_slot_that_frees_is_refilled_before_the_pool_waits_again(tmp_path, monkeypatch):
    """The pool's loop never waits (up to 0.2 s, 105 times in the grid) between noticing a run's end and
    starting the next queued run in its slot: it waits only when nothing ended."""
    from harness.launch import local

    events: list[str] = []

    class Fake:  # a forked run that ends after a few of the pool's polls, each later than the one before
        started = 0

        def __init__(self, ctx, run, *args, **kwargs):
            self.run, self.polls, self.length = run, 0, 2 + 3 * Fake.started
            Fake.started += 1
            events.append(f"start {run.run_id}")

        def done(self):
            self.polls += 1
            return self.polls > self.length

        def stop(self):
            pass

        def outcome(self):
            return "done", ""

    monkeypatch.setattr(local, "_Forked", Fake)
    monkeypatch.setattr(local, "_wait_for_an_end", lambda running, timeout: events.append("wait"))
    monkeypatch.setattr(local, "record_ended", lambda *a, **k: None)
    monkeypatch.setattr(local, "prepare_data", lambda *a, **k: False)
    spec = load_spec(spec_file(tmp_path, "refill", losses=("focal", "rs", "ce")))
    runs = spec.runs()
    pool = local.LocalPool(spec, runs, tmp_path / "results", False, "a1",
                           log=lambda m: events.append(m.split()[0] + " " + m.split()[1]) if m.startswith("finished") else None)
    outcomes = pool._run_queue(None, object(), 2, 1)
    assert sorted(outcomes) == sorted(r.run_id for r in runs)
    assert [e.split()[0] for e in events if e != "wait"] == ["start", "start", "finished", "start", "finished",
                                                            "finished"]  # the runs ended one at a time
    for i, event in enumerate(events):
        if event.startswith("finished") and i + 1 < len(events) and any(e.startswith("start") for e in events[i + 1:]):
            following = events[i + 1]
            assert following.startswith(("start", "finished")), events  # no wait before the slot is refilled
    assert "wait" in events  # it does wait while nothing has ended
