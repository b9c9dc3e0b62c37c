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


def test_the_reference_workload_is_fixed_work_timed_in_fresh_interpreters_at_once():
    from harness.bench import reference

    times = reference.run_workload(steps=1, repeats=2)
    assert len(times) == 2 and all(t > 0 for t in times)
    measured = reference.measure(steps=1, repeats=2, processes=2)
    assert measured["processes"] == 2 and len(measured["repeats"]) == 4  # 2 interpreters x 2 repetitions
    assert measured["workload"] == reference.workload(1, 2, 2)
    assert measured["workload"].startswith("1 training steps and 1 test batch of each of mmdet's own Faster R-CNN")
    assert measured["workload"].endswith("2 at once as the runs share the machine, median of 2 × 2")
    ordered = sorted(measured["repeats"])
    assert measured["seconds"] == round((ordered[1] + ordered[2]) / 2, 3) > 0  # the median of the 4
    assert reference.workload() == reference.workload(reference.STEPS, reference.REPEATS, reference.PROCESSES)


def test_the_reference_models_are_mmdets_own_at_the_tiny_sizes():
    """Nothing of the harness in the reference: mmdet's classes and losses, cut to the tiny profile's sizes."""
    from harness.bench import reference

    faster, atss = reference._models()
    assert type(faster).__module__.startswith("mmdet.") and type(atss).__module__.startswith("mmdet.")
    assert type(faster.rpn_head.loss_cls).__module__.startswith("mmdet.")
    assert type(atss.bbox_head).__name__ == "ATSSHead" and atss.bbox_head.num_classes == 8
    assert faster.backbone.depth == 18 and faster.backbone.conv1.out_channels == 16  # base_channels 16
    assert faster.neck.out_channels == 32 and faster.roi_head.bbox_head.fc_out_channels == 64
    assert faster.test_cfg.rpn.max_per_img == 100


def test_the_reference_interpreters_wait_at_the_start_barrier():
    """Each interpreter builds and warms up, says ``ready``, and times nothing until told to go, so that the
    interpreters of one measurement time their repetitions while all of them run."""
    import queue
    import subprocess
    import threading

    import pytest

    from harness.bench import reference

    proc = subprocess.Popen(reference._command(1, 1), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    lines = queue.Queue()
    threading.Thread(target=reference._lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        line = lines.get(timeout=120)
        while line is not None and line.strip() != reference.READY:
            line = lines.get(timeout=120)
        assert line is not None, "the interpreter ended before its barrier"
        with pytest.raises(queue.Empty):  # a repetition takes well under a second: nothing timed meanwhile
            lines.get(timeout=4.0)
        proc.stdin.write(reference.GO + "\n")
        proc.stdin.flush()
        out = lines.get(timeout=120)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out)
    assert len(result["repeats"]) == 1 and result["seconds"] > 0


def test_the_reference_workload_runs_with_the_allocator_the_runs_get(monkeypatch, tmp_path):
    """The reference's interpreter preloads what a local run's process preloads (tcmalloc where installed),
    and says so; HARNESS_ALLOCATOR=system gives both the C library's malloc; a bad value is one line."""
    import pytest

    from harness.bench import reference
    from harness.run import allocator

    lib = allocator.library()
    measured = reference.measure(steps=1, repeats=1, processes=1)
    assert measured["allocator"] == (Path(lib).resolve().name if lib else "system")  # the file mapped in
    monkeypatch.setenv(allocator.ENV, "system")
    assert reference.measure(steps=1, repeats=1, processes=1)["allocator"] == "system"
    monkeypatch.setenv(allocator.ENV, "jemalloc")
    with pytest.raises(RuntimeError, match=r"^HARNESS_ALLOCATOR='jemalloc': use 'system'"):
        reference.measure(steps=1, repeats=1, processes=1)

    ref = {"seconds": 1.0, "repeats": [1.0], "workload": "w", "allocator": "libtcmalloc_minimal.so.4.5.10"}
    text = record(500.0, 105, 105, True, out_dir=tmp_path, reference=ref).read_text()
    assert "(repetitions 1.00 s; memory allocator libtcmalloc_minimal.so.4.5.10, as the runs get it)" in text
    assert json.loads((tmp_path / "benchmark.json").read_text())["full"]["reference"]["allocator"] == ref["allocator"]
    text = record(500.0, 105, 105, True, out_dir=tmp_path, reference={**ref, "allocator": "system"}).read_text()
    assert "memory allocator the C library's malloc, as the runs get it" in text
    text = record(500.0, 105, 105, True, out_dir=tmp_path,
                  reference={k: v for k, v in ref.items() if k != "allocator"}).read_text()
    assert "(repetitions 1.00 s; its allocator not recorded)" in text


def test_a_failing_or_stuck_reference_workload_is_one_line(monkeypatch):
    import sys

    import pytest

    from harness.bench import reference

    monkeypatch.setattr(reference, "_command", lambda steps, repeats: [
        sys.executable, "-c", "import sys; print('Traceback ...', file=sys.stderr); sys.exit('ImportError: no torch')"])
    with pytest.raises(RuntimeError, match=r"^the reference workload failed \(exit 1\): ImportError: no torch$"):
        reference.measure()
    monkeypatch.setattr(reference, "_command", lambda steps, repeats: [
        sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"])
    with pytest.raises(RuntimeError, match=r"^the reference workload took more than 2 s$"):
        reference.measure(timeout_s=2)


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


def test_a_reference_timed_before_and_after_the_runs_shows_the_drift(tmp_path):
    """combined(): the median of both times' repetitions, each time's own median kept; benchmark.md says how
    much the machine's speed moved during the run. One side alone stays what it was."""
    from harness.bench.reference import combined

    before = {"seconds": 1.1, "repeats": [1.1, 1.12, 1.08, 1.1], "processes": 2, "workload": "w", "allocator": "system"}
    after = {"seconds": 1.3, "repeats": [1.3, 1.32, 1.28, 1.3], "processes": 2, "workload": "w", "allocator": "system"}
    both = combined(before, after)
    assert both["seconds"] == 1.2 and both["before"] == 1.1 and both["after"] == 1.3 and len(both["repeats"]) == 8
    assert "timed before the runs and after them, median of both times' 8 repetitions" in both["workload"]
    assert "2 at once" in both["workload"] and combined(None, after) is after and combined(before, None) is before
    assert combined(None, None) is None
    text = record(600.0, 105, 105, False, out_dir=tmp_path, reference=both).read_text()
    assert "Timed before the runs (1.10 s) and after them (1.30 s): the machine's speed moved by +18 %" in text
    assert "| 600.0 | 600 s | yes | 500.0 |" in text  # 600 s / the median of all 8, 1.2 s
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["full"]["reference"]["before"] == 1.1 and data["full"]["reference"]["after"] == 1.3
    plain = record(600.0, 105, 105, False, out_dir=tmp_path / "one", reference=after).read_text()
    assert "Timed before the runs" not in plain


def test_the_reference_is_timed_before_the_runs_only_when_every_run_will_train(tmp_path, monkeypatch, capsys):
    from harness.bench import reference
    from harness.commands.benchmark import _reference_before
    from harness.experiments import default_spec
    from harness.experiments.spec import load_spec
    from harness.files import write_json_atomic

    spec = load_spec(default_spec())
    calls = []

    def fake_measure(**kwargs):
        calls.append(kwargs)
        return {"seconds": 1.0, "repeats": [1.0] * 4, "processes": kwargs["processes"], "workload": "w", "allocator": "x"}

    monkeypatch.setattr(reference, "measure", fake_measure)
    steps = {}
    got = _reference_before(spec, tmp_path / "synthetic", steps)
    assert got["seconds"] == 1.0 and calls == [{"processes": 2, "repeats": reference.REPEATS_EACH_SIDE}]
    assert "reference_s" in steps and "before the runs" in capsys.readouterr().out
    run = spec.runs()[0]
    write_json_atomic(tmp_path / "synthetic" / "runs" / f"{run.run_id}.json", {"run_id": run.run_id, "status": "done"})
    assert _reference_before(spec, tmp_path / "synthetic", {}) is None and len(calls) == 1  # not a full run

    def failing(**kwargs):
        raise RuntimeError("the reference workload failed (exit 1): boom")

    monkeypatch.setattr(reference, "measure", failing)
    assert _reference_before(spec, tmp_path / "other", {}) is None
    assert "warning: the reference workload failed (exit 1): boom; the reference is timed after the runs only" in capsys.readouterr().out
