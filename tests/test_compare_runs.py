"""`harness compare-runs`: two result folders, cell by cell (harness/results/compare_runs.py)."""

from __future__ import annotations

import math

import pytest

from harness.cli import main
from harness.results.compare_runs import BETTER, EQUAL, FEW, NOISE, WORSE, compare
from test_tables import box, make_row, write_experiment

# ATSS RS: three seeds, AP 30/32/34 before
BEFORE = {0: 0.30, 1: 0.32, 2: 0.34}


def _folders(tmp_path, after: dict, loss: str = "rs", olrp_after=None):
    before = write_experiment(tmp_path / "before", [make_row("atss", loss, s, metrics=box(v, olrp=0.70))
                                                    for s, v in BEFORE.items()])
    rows = [make_row("atss", loss, s, metrics=box(v, olrp=(olrp_after or {}).get(s, 0.70))) for s, v in after.items()]
    return before, write_experiment(tmp_path / "after", rows)


def _row(table, metric="bbox_AP"):
    (row,) = table[table["metric"] == metric].itertuples()
    return row


def test_identical_values_are_equal(tmp_path):
    before, after = _folders(tmp_path, dict(BEFORE))
    r = _row(compare(before, after))
    assert r.verdict == EQUAL and r.k == 3 and r.delta == 0 and r.before == pytest.approx(32.0)


def test_a_drop_on_every_seed_is_worse_beyond_noise_and_exits_1(tmp_path, capsys):
    before, after = _folders(tmp_path, {s: v - 0.05 + 0.001 * s for s, v in BEFORE.items()})
    r = _row(compare(before, after))
    assert r.verdict == WORSE and r.delta == pytest.approx(-4.9) and r.high < 0
    assert main(["compare-runs", str(before), str(after), "--out", str(tmp_path / "cmp")]) == 1
    out = capsys.readouterr().out
    assert "| ATSS | RS | 32.00 (3) | 27.10 (3) | -4.90 [" in out and "worse beyond seed noise" in out
    assert out.startswith(f"Before: {before}. After: {after}.")
    assert (tmp_path / "cmp.md").read_text().startswith("# Cells before and after")
    assert "worse beyond seed noise" in (tmp_path / "cmp.csv").read_text()


def test_a_rise_is_better_and_exits_0(tmp_path):
    before, after = _folders(tmp_path, {s: v + 0.03 + 0.002 * s for s, v in BEFORE.items()})
    assert _row(compare(before, after)).verdict == BETTER
    assert main(["compare-runs", str(before), str(after)]) == 0


def test_mixed_moves_are_within_seed_noise(tmp_path):
    before, after = _folders(tmp_path, {0: 0.33, 1: 0.30, 2: 0.335})
    r = _row(compare(before, after))
    assert r.verdict == NOISE and r.low < 0 < r.high


def test_errors_count_lower_as_better(tmp_path):
    """oLRP is an error: the same values, lower after on every seed, is better."""
    before, after = _folders(tmp_path, dict(BEFORE), olrp_after={0: 0.60, 1: 0.61, 2: 0.62})
    r = _row(compare(before, after, ["bbox_oLRP"]), "bbox_oLRP")
    assert r.delta < 0 and r.verdict == BETTER


def test_one_paired_seed_is_too_few_and_missing_sides_are_named(tmp_path):
    before, after = _folders(tmp_path, {0: 0.31})
    assert _row(compare(before, after)).verdict == FEW
    write_experiment(after, [make_row("faster_rcnn", "ce", 0, metrics=box(0.2))])
    table = compare(before, after)
    only = table[table["detector"] == "faster_rcnn"].iloc[0]
    assert only.verdict == "only after" and math.isnan(only.before)


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    before, after = _folders(tmp_path, dict(BEFORE))
    assert main(["compare-runs", str(before), str(tmp_path / "nowhere")]) == 2
    assert "has no runs/ folder" in capsys.readouterr().err
    assert main(["compare-runs", str(before), str(after), "--metric", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "no run in either folder has metric 'nonsense'" in err and len(err.strip().splitlines()) == 1


def test_training_says_whether_the_paired_runs_loss_curves_are_equal(tmp_path, capsys):
    """The same curves (the default rows' curve) with other AP: trained alike, the evaluation moved; a
    curve that differs on one seed: trained differently."""
    before, after = _folders(tmp_path, {s: v - 0.0002 for s, v in BEFORE.items()})
    r = _row(compare(before, after))
    assert r.verdict == WORSE and r.training == "same"
    main(["compare-runs", str(before), str(after)])
    out = capsys.readouterr().out
    assert "| -0.02 [-0.02, -0.02] (3) | worse beyond seed noise | same |" in out
    assert "Of the others, 1 trained alike on both sides" in out

    rows = [make_row("atss", "rs", s, metrics=box(v)) for s, v in BEFORE.items()]
    rows[1]["curve"][3][1] += 1e-12  # one logged loss of one seed, in its last bits
    write_experiment(tmp_path / "other", rows)
    r = _row(compare(before, tmp_path / "other"))
    assert r.verdict == EQUAL and r.training == "differs"
    main(["compare-runs", str(before), str(tmp_path / "other")])
    assert "trained alike" not in capsys.readouterr().out

    no_curves = [make_row("atss", "rs", s, metrics=box(v), curve=[]) for s, v in BEFORE.items()]
    write_experiment(tmp_path / "bare", no_curves)
    assert _row(compare(before, tmp_path / "bare")).training == ""
