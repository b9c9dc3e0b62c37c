"""results/bench/benchmark.md: the latest full and cached `make benchmark` wall times against the targets."""

from __future__ import annotations

import json

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
    assert "| full |" in text and "| 35 of 35 | yes |" in text and "| 661.0 | 900 s | yes |" in text
    assert "| 5.6 | 15 s | yes |" in text
    record(20.0, 0, 35, False, out_dir=tmp_path)  # a slow cached rerun misses its target, and says so
    assert "| 20.0 | 15 s | **no** |" in md.read_text()


def test_an_unmeasured_kind_says_so(tmp_path):
    md = record(5.0, 0, 35, False, out_dir=tmp_path)
    assert "| full | not measured yet |" in md.read_text()


def test_the_process_start_is_in_the_recent_past():
    import time

    from harness.bench.benchmark_timing import process_started_at

    assert time.time() - 3600 < process_started_at() <= time.time()
