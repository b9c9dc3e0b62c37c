"""The loss benchmark's baseline is the same computation, and its tables are written whole."""

from __future__ import annotations

import csv

import pytest
import torch

from harness.bench import losses as bench
from harness.bench.plain import plain_rank_sort
from harness.cli import main
from harness.losses import rank_sort_loss


def test_plain_loop_computes_the_same_update_as_the_library():
    logits, targets, _ = bench.make_inputs(3000, 40, "cpu")
    logits, targets = logits.double(), targets.double()
    ranking, sorting, grad = plain_rank_sort(logits, targets)
    x = logits.clone().requires_grad_(True)
    out = rank_sort_loss(x, targets)
    out.total.backward()
    assert out.ranking.item() == pytest.approx(ranking.item(), abs=1e-12)
    assert out.sorting.item() == pytest.approx(sorting.item(), abs=1e-12)
    torch.testing.assert_close(x.grad, grad, atol=1e-12, rtol=0)


def test_benchmark_writes_csv_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PLAIN_MAX_WORK", 2000 * 50)  # the plain loop is skipped for the larger size
    monkeypatch.setattr(bench, "TIME_BUDGET_S", 0.0)  # three runs each
    rows = bench.run(["cpu"], sizes_n=(2000, 8000), sizes_p=(50,), log=lambda _: None)
    csv_path, md_path = bench.write(rows, tmp_path / "losses")
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * len(bench.LOSSES)
    skipped = [r for r in table if r["note"]]
    assert [(r["N"], r["loss"]) for r in skipped] == [("8000", "plain_rs")]
    assert all(float(r["median_ms"]) > 0 for r in table if not r["note"])
    # the bucketed comparators carry their distance to the exact losses; nothing else does
    for r in table:
        if r["loss"] in bench.BUCKETED:
            assert 0 <= float(r["value_error"]) < 0.05 and 0 <= float(r["grad_error"]) < 0.05
        else:
            assert r["value_error"] == r["grad_error"] == ""
    text = md_path.read_text()
    assert "| 2,000 | 50 |" in text and "| 8,000 | 50 |" in text and "—" in text
    assert "BRS max \\|Δgrad\\|" in text and "| fastest runs |" not in text  # no targets at these sizes
    assert all(float(r["min_ms"]) <= float(r["median_ms"]) for r in table if not r["note"])
    assert not list(tmp_path.glob("*.tmp"))


def test_bucketed_errors_vanish_at_delta_zero_where_they_are_exact(monkeypatch):
    logits, targets, _ = bench.make_inputs(3000, 40, "cpu")
    value_error, grad_error = bench.bucketed_errors("bucketed_rs", logits, targets)
    assert 0 < value_error < 1e-2 and 0 < grad_error
    import harness.bench.losses as module
    from harness.losses import bucketed_rank_sort_loss, rank_sort_loss

    monkeypatch.setattr(module, "bucketed_rank_sort_loss", lambda x, t: bucketed_rank_sort_loss(x, t, delta=0.0))
    monkeypatch.setattr(module, "rank_sort_loss", lambda x, t: rank_sort_loss(x, t, delta=0.0))
    value_error, grad_error = bench.bucketed_errors("bucketed_rs", logits, targets)
    assert value_error < 1e-12 and grad_error < 1e-12


def test_targets_report_reads_the_run():
    rows = [
        bench.Row("cpu", 1_000_000, 1_000, "rs", 30.0, 3),
        bench.Row("cpu", 1_000_000, 1_000, "ap", 26.0, 3),
        bench.Row("cpu", 1_000_000, 1_000, "focal", 25.0, 3),
        bench.Row("cpu", 1_000_000, 1_000, "bucketed_rs", 40.0, 3),
        bench.Row("cpu", 1_000_000, 1_000, "plain_rs", 15_000.0, 3),
        bench.Row("cpu", 1_000_000, 10_000, "rs", 100.0, 3),
        bench.Row("cpu", 4_000_000, 1_000, "rs", 120.0, 3),
    ]
    report = {what: (val, ok) for what, val, ok in bench.targets_report(rows)}
    assert report["RS ≤ 2× Focal (N=1e6, P=1e3)"] == ("1.20×", True)
    assert report["AP ≤ 2× Focal (N=1e6, P=1e3)"] == ("1.04×", True)
    assert report["RS: time at P=1e4 ≤ 3× time at P=1e3 (N=1e6)"] == ("3.33×", False)
    assert report["RS: time at 4N ≤ 4.5× time at N (N=1e6→4e6, P=1e3)"] == ("4.00×", True)
    assert report["RS no slower than Bucketed RS (N=1e6, P=1e3)"] == ("0.75×", True)
    assert report["RS ≥ 50× faster than the plain loop (N=1e6, P=1e3)"] == ("500×", True)
    assert not any("aLRP" in what for what in report)  # no aLRP rows: nothing claimed
    fastest = dict((what, ok) for what, _, ok in bench.targets_report(rows, stat="min_ms"))
    assert fastest == {}  # no fastest runs recorded in these rows: nothing claimed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
def test_cuda_without_gpu_is_a_usage_error(capsys):
    assert main(["bench", "losses", "--device", "cuda", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err
