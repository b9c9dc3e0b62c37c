"""results/bench/benchmark.md: the latest full and cached `make benchmark` wall times against the targets."""

from __future__ import annotations

import json
from pathlib import Path

from harness.bench.benchmark_timing import record


def test_full_and_cached_runs_are_kept_apart_and_partial_runs_ignored(tmp_path):
    assert record(100.0, 3, 35, False, out_dir=tmp_path) is None  # some cells only: neither kind
    assert not (tmp_path / "benchmark.json").exists()
    md = record(661.04, 35, 35, True, out_dir=tmp_path)
    record(5.61, 0, 35, False, out_dir=tmp_path)
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["full"]["seconds"] == 661.0 and data["full"]["generated_data"] is True
    assert data["cached"]["seconds"] == 5.6 and data["cached"]["trained"] == 0
    text = md.read_text()
    assert "| full |" in text and "| 35 of 35 | yes |" in text and "| 661.0 | 600 s | **no** (+61 s) |" in text
    assert "| 5.6 | 15 s | yes |" in text
    record(20.0, 0, 35, False, out_dir=tmp_path)  # a slow cached rerun misses its target, and says so
    assert "| 20.0 | 15 s | **no** (+5 s) |" in md.read_text()


def test_an_unmeasured_kind_says_so(tmp_path):
    md = record(5.0, 0, 35, False, out_dir=tmp_path)
    assert "| full | not measured yet |" in md.read_text()


def test_the_process_start_is_in_the_recent_past():
    import time

    from harness.bench.benchmark_timing import process_started_at

    assert time.time() - 3600 < process_started_at() <= time.time()


def _row(det, seed, **timing):
    return {"run_id": f"{det}-{seed}", "detector": det, "seed": seed, "status": "done",
            "provenance": {"wall_time_s": sum(v for k, v in timing.items() if k in ("startup_s", "imports_s", "build_s",
                                                                                   "train_s", "test_s", "finish_s")),
                           "timing": timing}}


def test_the_full_run_keeps_its_steps_and_a_runs_split_by_phase(tmp_path):
    rows = [_row("atss", s, startup_s=0.1, imports_s=0.0, build_s=0.5, train_s=6.0, data_s=0.4, checkpoint_s=0.1,
                 test_s=1.0, evaluate_s=0.3, finish_s=0.1) for s in range(3)]
    rows += [_row("faster_rcnn", 0, startup_s=0.1, build_s=0.7, train_s=12.0, test_s=2.0, finish_s=0.1),
             {"run_id": "old", "detector": "paa", "provenance": {"wall_time_s": 9.0}}]  # no timing: left out
    md = record(700.0, 35, 35, True, out_dir=tmp_path, steps={"data_s": 5.0, "runs_s": 680.0, "tables_s": 9.0},
                rows=rows, slots=2)
    data = json.loads((tmp_path / "benchmark.json").read_text())
    cells = data["full"]["cells"]
    assert cells["atss"]["runs"] == 3 and cells["atss"]["train"] == 6.0 and cells["atss"]["data"] == 0.4
    assert cells["all"]["runs"] == 4 and cells["all"]["train"] == 30.0  # summed over runs: core-seconds
    assert "paa" not in cells and data["full"]["steps"]["runs_s"] == 680.0
    text = md.read_text()
    assert "| train and evaluate the runs | 680.0 | 97% |" in text and "| start-up, planning, the rest | 6.0 |" in text
    assert "| ATSS | 3 | 0.10 | 0.00 | 0.50 | 6.00 | 0.40 | 0.10 | 1.00 | 0.30 | 0.10 | 7.70 |" in text
    assert "| Faster R-CNN | 1 |" in text and "| **all runs (sum)** | 4 |" in text
    record(5.0, 0, 105, False, out_dir=tmp_path)  # a cached rerun keeps the full run's split
    assert "| ATSS | 3 |" in md.read_text()


def test_a_missed_target_says_by_how_much(tmp_path):
    md = record(700.0, 105, 105, True, out_dir=tmp_path)
    assert "| 700.0 | 600 s | **no** (+100 s) |" in md.read_text()


def test_a_full_run_is_also_reported_as_a_multiple_of_the_reference_workload(tmp_path):
    rows = [_row("atss", s, startup_s=0.1, build_s=0.5, train_s=6.0, test_s=1.0, finish_s=0.1) for s in range(2)]
    reference = {"seconds": 5.0, "repeats": [5.0, 5.2, 4.9], "workload": "the fixed convolutions"}
    md = record(500.0, 105, 105, True, out_dir=tmp_path, rows=rows, reference=reference,
                steps={"runs_s": 680.0, "reference_s": 16.0})
    text = md.read_text()
    assert "| 500.0 | 600 s | yes | 100.0 |" in text  # 500 s / 5 s
    assert "## Times that compare across machines" in text and "(the fixed convolutions): **5.00 s**" in text
    assert "repetitions 5.00, 5.20, 4.90 s" in text
    assert "| full run (`make benchmark`) | 500.0 | 100.0 |" in text
    assert "| runs' core-seconds (sum of run totals) | 15 | 3.1 |" in text  # 2 x 7.7 s / 5 s
    assert "| time the reference workload | 16.0 | 3% |" in text
    md = record(3.0, 0, 105, False, out_dir=tmp_path)  # a cached rerun has no reference of its own
    assert "| 3.0 | 15 s | yes |  |" in md.read_text() and "| 500.0 | 600 s | yes | 100.0 |" in md.read_text()


def test_without_a_reference_there_is_no_multiple(tmp_path):
    text = record(500.0, 105, 105, True, out_dir=tmp_path).read_text()
    assert "| 500.0 | 600 s | yes |  |" in text and "compare across machines" not in text


def test_the_reference_workload_is_fixed_work_timed_in_a_fresh_interpreter():
    from harness.bench import reference

    times = reference.run_workload(steps=1, repeats=2)
    assert len(times) == 2 and all(t > 0 for t in times)
    measured = reference.measure(steps=2, repeats=3)
    assert len(measured["repeats"]) == 3 and measured["workload"] == reference.workload(2, 3)
    assert measured["workload"].startswith("2 forward + backward steps") and measured["workload"].endswith("median of 3")
    assert measured["seconds"] == sorted(measured["repeats"])[1] > 0  # the median of 3
    assert reference.workload() == reference.workload(reference.STEPS, reference.REPEATS)


def test_the_reference_workload_runs_with_the_allocator_the_runs_get(monkeypatch, tmp_path):
    """The reference's interpreter preloads what a local run's process preloads (tcmalloc where installed),
    and says so; HARNESS_ALLOCATOR=system gives both the C library's malloc; a bad value is one line."""
    import pytest

    from harness.bench import reference
    from harness.run import allocator

    lib = allocator.library()
    measured = reference.measure(steps=1, repeats=1)
    assert measured["allocator"] == (Path(lib).resolve().name if lib else "system")  # the file mapped in
    monkeypatch.setenv(allocator.ENV, "system")
    assert reference.measure(steps=1, repeats=1)["allocator"] == "system"
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(RuntimeError, match=r"^HARNESS_ALLOCATOR='jemalloc': use 'system'"):
        reference.measure(steps=1, repeats=1)

    ref = {"seconds": 1.0, "repeats": [1.0], "workload": "w", "allocator": "libtcmalloc_minimal.so.4.5.10"}
    text = record(500.0, 105, 105, True, out_dir=tmp_path, reference=ref).read_text()
    assert "(repetitions 1.00 s; memory allocator libtcmalloc_minimal.so.4.5.10, as the runs get it)" in text
    assert json.loads((tmp_path / "benchmark.json").read_text())["full"]["reference"]["allocator"] == ref["allocator"]
    text = record(500.0, 105, 105, True, out_dir=tmp_path, reference={**ref, "allocator": "system"}).read_text()
    assert "memory allocator the C library's malloc, as the runs get it" in text
    text = record(500.0, 105, 105, True, out_dir=tmp_path,
                  reference={k: v for k, v in ref.items() if k != "allocator"}).read_text()
    assert "(repetitions 1.00 s; its allocator not recorded)" in text


def test_a_failing_reference_workload_is_one_line(monkeypatch):
    import subprocess

    import pytest

    from harness.bench import reference

    def failing(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="Traceback ...\nImportError: no torch")

    monkeypatch.setattr(reference.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match=r"^the reference workload failed \(exit 1\): ImportError: no torch$"):
        reference.measure()


def test_the_full_run_says_which_memory_allocator_its_runs_used(tmp_path):
    """The allocator moves a run's time (harness.run.allocator), so the benchmark says which one each run had."""
    rows = [_row("atss", s, train_s=6.0) for s in range(3)]
    for row in rows[:2]:
        row["provenance"]["allocator"] = "libtcmalloc_minimal.so.4.5.10"
    rows[2]["provenance"]["allocator"] = "system"
    rows.append(_row("paa", 0, train_s=7.0))  # a row from before the allocator was recorded
    md = record(700.0, 35, 35, False, out_dir=tmp_path, rows=rows)
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["full"]["allocators"] == {"libtcmalloc_minimal.so.4.5.10": 2, "system": 1, "unrecorded": 1}
    assert ("libtcmalloc_minimal.so.4.5.10 in 2, the C library in 1, unrecorded in 1 of 4 runs."
            in md.read_text())
