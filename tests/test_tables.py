"""Tables from hand-built result rows: mean / std / count over seeds, failed / unfinished / missing cells
shown (never dropped), bold only for a best loss separated from every other beyond seed noise (paired
t-test over seeds) and never from single seeds, change vs baseline with its interval, published numbers
with their sources, LaTeX booktabs, CSV round trip, and the `harness table` command's errors."""

from __future__ import annotations

import copy
import json
import math
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.results.frame import load_experiment, load_frame, rows_frame
from harness.results.paper import KEY, SOURCES, load_paper
from harness.files import write_json_atomic
from harness.rows import write_row
from harness.results.tables import (
    STAT_COLUMNS,
    TablesError,
    build_all,
    build_tables,
    cell_stats,
    to_latex,
    to_markdown,
    write_tables,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper-results.md"


def make_row(det, loss, seed, status="done", metrics=None, kind="coco", experiment="exp", curve=None, **extra):
    rid = f"{det}-{loss}-s{seed}-{kind[:4]}000000"
    row = {
        "run_id": rid, "experiment": experiment, "detector": det, "loss": loss, "seed": seed,
        "dataset": {"kind": kind, "root": None, "repeat_factor": 0.001 if kind == "lvis" else None},
        "profile": "tiny", "schedule": {"epochs": 4, "lr": None}, "loss_modules": [],
        "status": status, "reason": None if status == "done" else "non-finite loss at iteration 3",
        "metrics": metrics if metrics is not None else {},
        "curve": curve if curve is not None else [[i * 10, 2.0 / (i + 1), {"loss_cls": 1.5 / (i + 1), "loss_bbox": 0.5 / (i + 1)}]
                                                  for i in range(6)],
        "provenance": {"git_commit": "abc123", "git_dirty": False, "versions": {"torch": "2.14.1", "mmdet": "3.3.0"},
                       "effective_batch": 16, "lr": 0.012, "recipe_batch": 16, "recipe_lr": 0.012, "wall_time_s": 41.2,
                       "job_id": f"7_{seed}", "host": "node1", "restarts": 0, "finished_at": "2025-01-01T00:00:00"},
    }
    row.update(extra)
    return row


def box(ap, olrp=0.7, **more):
    return {"bbox_AP": ap, "bbox_AP50": ap + 0.2, "bbox_AP75": ap - 0.05, "bbox_APs": ap / 2, "bbox_APm": ap,
            "bbox_APl": None, "bbox_oLRP": olrp, "bbox_oLRP_loc": 0.2, "bbox_oLRP_FP": 0.3, "bbox_oLRP_FN": 0.4,
            **more}


def coco_rows():
    """ATSS (baseline Focal) and Faster R-CNN (baseline CE) over three seeds; a failed seed, a failed
    cell, a missing cell (paa x ap) and an external loss ("my_loss") that ran on ATSS only."""
    rows = []
    for s, (f, r) in enumerate([(0.30, 0.34), (0.32, 0.36), (0.34, 0.38)]):
        rows.append(make_row("atss", "focal", s, metrics=box(f, olrp=0.70)))
        rows.append(make_row("atss", "rs", s, metrics=box(r, olrp=0.66 + 0.01 * s)))
        rows.append(make_row("faster_rcnn", "ce", s, metrics=box(0.30 + 0.01 * s, olrp=0.72)))
        rows.append(make_row("faster_rcnn", "alrp", s, "failed"))  # every seed failed
    rows.append(make_row("faster_rcnn", "rs", 0, metrics=box(0.40, olrp=0.64)))
    rows.append(make_row("faster_rcnn", "rs", 1, metrics=box(0.42, olrp=0.62)))
    rows.append(make_row("faster_rcnn", "rs", 2, "failed"))  # one seed of three failed
    rows.append(make_row("atss", "alrp", 0, metrics=box(0.30, olrp=0.71)))
    rows.append(make_row("atss", "ce", 0, metrics=box(0.20, olrp=0.80)))
    rows.append(make_row("faster_rcnn", "focal", 0, metrics=box(0.20, olrp=0.80)))
    rows.append(make_row("atss", "my_loss", 0, metrics=box(0.10, olrp=0.9)))
    return rows


def noisy_rows():
    """Three seeds per cell with seed noise. ATSS: RS above Focal and AP on every seed (separated; oLRP
    too, lower). Faster R-CNN and YOLACT: the overlapping cells of the synthetic benchmark (issue #12).
    PAA: RS clearly above Focal, but AP is all over the place (mean below RS, not separated from it)."""
    grid = {
        ("atss", "focal"): ([30.0, 31.5, 29.0], [70.0, 71.0, 69.5]),
        ("atss", "rs"): ([36.1, 37.2, 35.4], [66.0, 65.5, 67.0]),
        ("atss", "ap"): ([29.0, 32.0, 30.5], [70.0, 69.0, 71.0]),
        ("faster_rcnn", "ce"): ([9.8, 10.8, 10.7], [90.0, 89.0, 89.5]),
        ("faster_rcnn", "rs"): ([12.3, 9.5, 10.3], [88.0, 90.5, 89.0]),
        ("yolact", "ce"): ([0.7, 3.4, 3.8], [99.0, 97.0, 96.5]),
        ("yolact", "alrp"): ([0.4, 5.3, 5.9], [99.5, 95.0, 94.0]),
        ("paa", "focal"): ([35.0, 36.0, 37.0], [70.0, 69.0, 68.0]),
        ("paa", "rs"): ([40.0, 41.0, 42.0], [66.0, 65.0, 64.0]),
        ("paa", "ap"): ([30.0, 45.0, 38.0], [72.0, 60.0, 66.0]),
    }
    return [make_row(det, loss, s, metrics=box(ap[s] / 100, olrp=olrp[s] / 100))
            for (det, loss), (ap, olrp) in grid.items() for s in range(3)]


def write_experiment(folder: Path, rows) -> Path:
    for r in rows:
        write_row(folder, r)
    return folder


def cell(stats, det, loss, metric="bbox_AP", dataset=None):
    s = stats[(stats["detector"] == det) & (stats["loss"] == loss) & (stats["metric"] == metric)]
    if dataset is not None:
        s = s[s["dataset"] == dataset]
    assert len(s) == 1, (det, loss, metric)
    return s.iloc[0]


@pytest.fixture
def coco(tmp_path):
    return write_experiment(tmp_path / "coco_exp", coco_rows())


# ------------------------------------------------------------------------------------------------
# The frame


def test_frame_is_tidy_one_row_per_run(coco):
    frame, corrupt = load_frame(coco)
    assert not corrupt and len(frame) == len(coco_rows()) and frame["run_id"].is_unique
    for col in ("run_id", "experiment", "detector", "loss", "seed", "state", "status", "reason", "dataset",
                "dataset_kind", "profile", "schedule_epochs", "loss_modules", "bbox_AP", "bbox_oLRP_FN",
                "git_commit", "effective_batch", "recipe_lr", "wall_time_s", "job_id", "version_torch"):
        assert col in frame.columns, col
    assert frame["bbox_AP"].dtype == "float64"
    failed = frame[frame["status"] == "failed"]
    assert failed["bbox_AP"].isna().all() and (failed["state"] == "failed").all()
    assert failed["reason"].str.contains("non-finite").all()
    assert set(frame["dataset"]) == {"coco"}
    # canonical order: Faster R-CNN before ATSS, CE before Focal before ... external losses last
    assert list(dict.fromkeys(frame["detector"])) == ["faster_rcnn", "atss"]
    assert list(dict.fromkeys(frame.loc[frame["detector"] == "atss", "loss"])) == ["ce", "focal", "alrp", "rs", "my_loss"]


def test_runs_without_rows_are_in_the_frame_with_their_state():
    frame = rows_frame([make_row("atss", "focal", 0, metrics=box(0.3))], others=[
        {"run_id": "x1", "detector": "atss", "loss": "rs", "seed": 0, "state": "unfinished"},
        {"run_id": "x3", "detector": "atss", "loss": "alrp", "seed": 0, "state": "missing"}])
    assert len(frame) == 3 and set(frame["dataset"]) == {"coco"}  # the one known dataset is shared
    stats = cell_stats(frame, paper=False)
    assert cell(stats, "atss", "rs")["text"] == "unfinished"
    assert cell(stats, "atss", "alrp")["text"] == "—"
    assert cell(stats, "atss", "focal")["text"] == "30.0 (1)"


def test_tables_read_rows_only_never_the_manifest(tmp_path):
    """Submitted runs without a row are the launch's business (harness status), not the tables'."""
    folder = write_experiment(tmp_path / "e", [make_row("atss", "focal", 0, metrics=box(0.3))])
    write_json_atomic(folder / "manifest.json", {"runs": {"atss-rs-s0-q": {
        "detector": "atss", "loss": "rs", "seed": 0, "dataset": {"kind": "coco"}, "executor": "local", "job_id": None}}})
    frame, _ = load_frame(folder)
    assert set(frame["run_id"]) == {"atss-focal-s0-coco000000"}


# ------------------------------------------------------------------------------------------------
# Cell statistics


def test_mean_std_count_over_seeds(coco):
    stats = cell_stats(load_frame(coco)[0], paper=False)
    assert list(stats.columns) == STAT_COLUMNS
    c = cell(stats, "atss", "focal")
    assert c["n"] == 3 and c["mean"] == pytest.approx(32.0) and c["std"] == pytest.approx(2.0)
    assert c["text"] == "32.0 ± 2.0 (3)"
    one = cell(stats, "atss", "alrp")
    assert one["n"] == 1 and math.isnan(one["std"]) and one["text"] == "30.0 (1)"


def test_failed_and_missing_cells_are_shown_not_dropped(coco):
    stats = cell_stats(load_frame(coco)[0], paper=False)
    assert cell(stats, "faster_rcnn", "alrp")["text"] == "failed"
    assert cell(stats, "faster_rcnn", "alrp")["failed"] == 3
    partly = cell(stats, "faster_rcnn", "rs")
    assert partly["n"] == 2 and partly["text"] == "41.0 ± 1.4 (2; 1 failed)"
    # every detector x loss seen in the experiment is a cell: Faster R-CNN never ran my_loss
    assert cell(stats, "faster_rcnn", "my_loss")["text"] == "—"
    assert cell(stats, "faster_rcnn", "my_loss")["runs"] == 0
    assert len(stats.drop_duplicates(["detector", "loss"])) == 2 * 5


def test_undefined_metric_is_nd_not_missing(coco):
    tset = build_tables(load_frame(coco)[0], "bbox_APl", paper=False)  # every run reports APl = null
    assert cell(tset.stats, "atss", "focal", "bbox_APl")["text"] == "n/d"
    assert cell(tset.stats, "faster_rcnn", "alrp", "bbox_APl")["text"] == "failed"


def test_a_clearly_separated_three_seed_cell_is_bold_in_the_metric_direction():
    stats = cell_stats(rows_frame(noisy_rows()), paper=False)
    ap = stats[stats["metric"] == "bbox_AP"]
    assert set(zip(ap.loc[ap["best"], "detector"], ap.loc[ap["best"], "loss"])) == {("atss", "rs")}
    rs = cell(stats, "atss", "rs")
    assert rs["top"] and rs["test"] == "separated" and rs["test_n"] == 3
    # the decisive comparison: the rival with the largest p (AP here: Focal's differences are steadier)
    assert rs["rival"] == "ap" and rs["test_low"] > 0 and rs["test_p"] < 0.05
    assert rs["test_diff"] == pytest.approx((7.1 + 5.2 + 4.9) / 3)
    # oLRP: lower is better, and the lowest is separated too
    olrp = stats[(stats["metric"] == "bbox_oLRP") & stats["best"]]
    assert set(zip(olrp["detector"], olrp["loss"])) == {("atss", "rs")}
    o = cell(stats, "atss", "rs", "bbox_oLRP")
    assert bool(o["lower_is_better"]) and o["test_diff"] < 0 and o["test_high"] < 0  # RS − rival, below zero
    # every other cell: its comparison with the top, in the metric's units (below the top)
    focal = cell(stats, "atss", "focal")
    assert focal["rival"] == "rs" and focal["test"] == "separated" and focal["test_high"] < 0


def test_overlapping_cells_are_not_bold_and_the_table_says_which_comparison_fails():
    tset = build_tables(rows_frame(noisy_rows()), paper=False)
    for det, top, other in (("faster_rcnn", "rs", "ce"), ("yolact", "alrp", "ce")):
        c = cell(tset.stats, det, top)
        assert c["top"] and not c["best"] and c["test"] == "not separated" and c["rival"] == other
        assert c["test_low"] < 0 < c["test_high"] and c["test_p"] > 0.05
    grid = tset.tables["coco"][0].frame.set_index("Detector")["Best (95 %)"]
    assert grid["Faster R-CNN"].startswith("none (RS − CE: +0.3 [") and grid["Faster R-CNN"].endswith("] (3))")
    assert grid["ATSS"].startswith("RS (+5.7 [") and grid["ATSS"].endswith("] (3) vs AP)")


def test_the_best_must_beat_every_other_loss_not_only_the_runner_up():
    stats = cell_stats(rows_frame(noisy_rows()), paper=False)
    rs = cell(stats, "paa", "rs")
    assert cell(stats, "paa", "focal")["test"] == "separated"  # the runner-up is beaten on every seed
    assert rs["top"] and not rs["best"] and rs["rival"] == "ap" and rs["test"] == "not separated"


def test_paired_interval_is_the_paired_t_test():
    from scipy import stats as st

    from harness.results.tables import paired_interval

    a, b = np.array([36.1, 37.2, 35.4, np.nan]), np.array([29.0, 32.0, 30.5, 31.0])
    k, m, lo, hi, p = paired_interval(a, b)
    d = a[:3] - b[:3]
    half = st.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert k == 3 and m == pytest.approx(d.mean()) and (lo, hi) == pytest.approx((d.mean() - half, d.mean() + half))
    assert p == pytest.approx(st.ttest_rel(a[:3], b[:3]).pvalue)
    assert paired_interval(np.array([1.0, np.nan]), np.array([0.0, 2.0]))[:2] == (1, 1.0)  # one seed: no interval
    assert math.isnan(paired_interval(np.array([1.0, np.nan]), np.array([0.0, 2.0]))[2])
    assert paired_interval(np.array([np.nan]), np.array([1.0]))[0] == 0


def test_single_seed_rows_bold_nothing_and_the_table_says_why():
    rows = [make_row(d, l, 0, metrics=box(ap)) for d, l, ap in
            [("atss", "focal", 0.10), ("atss", "rs", 0.40), ("atss", "ce", 0.01), ("paa", "focal", 0.2), ("paa", "ap", 0.3)]]
    tset = build_tables(rows_frame(rows), paper=False)
    assert not tset.stats["best"].any()
    assert set(tset.stats.loc[tset.stats["top"] & (tset.stats["n"] > 0), "test"]) == {"too few seeds"}
    md = tset.markdown()
    assert "**" not in md
    assert md.count("Nothing is bold: every cell has at most one seed") == 3  # grid, compare, metrics
    grid = tset.tables["coco"][0].frame.set_index("Detector")["Best (95 %)"]
    assert grid["ATSS"] == "none (RS vs Focal: 1 common seed)"
    tex = tset.latex()
    assert r"fseries" not in tex and "Nothing is bold" in tex


def test_change_vs_baseline(coco):
    stats = cell_stats(load_frame(coco)[0], paper=False)
    rs = cell(stats, "atss", "rs")
    assert rs["baseline_loss"] == "focal" and rs["delta"] == pytest.approx(36.0 - 32.0)
    assert cell(stats, "faster_rcnn", "rs")["baseline_loss"] == "ce"
    assert cell(stats, "faster_rcnn", "rs")["delta"] == pytest.approx((10.0 + 11.0) / 2)  # seeds 0 and 1 only
    assert cell(stats, "faster_rcnn", "rs")["delta_n"] == 2
    assert cell(stats, "atss", "rs", "bbox_oLRP")["delta"] == pytest.approx(67.0 - 70.0)  # negative: better
    assert cell(stats, "atss", "focal")["delta"] == 0
    compare = build_tables(load_frame(coco)[0], paper=False).tables["coco"][1].frame
    atss = compare.index[compare["Detector"] == "ATSS"][0]
    by_loss = dict(zip(compare["Loss"][atss:atss + 5], compare["Δ vs baseline"][atss:atss + 5]))
    # paired by seed: RS − Focal is +4.0 on every seed (an interval of width 0); CE, aLRP, my_loss ran
    # seed 0 only, where Focal has 30.0: one pair, no interval
    assert by_loss["Focal †"] == "baseline" and by_loss["RS"] == "+4.0 [+4.0, +4.0] (3)"
    assert by_loss["CE"] == "-10.0 (1)" and by_loss["aLRP"] == "0.0 (1)" and by_loss["my_loss"] == "-20.0 (1)"
    fr = compare.index[compare["Detector"] == "Faster R-CNN"][0]
    assert compare.loc[fr + 4, "Loss"] == "my_loss" and compare.loc[fr + 4, "Δ vs baseline"] == ""  # missing


def test_change_vs_baseline_carries_its_interval():
    tset = build_tables(rows_frame(noisy_rows()), paper=False)
    rs = cell(tset.stats, "atss", "rs")
    d = np.array([36.1 - 30.0, 37.2 - 31.5, 35.4 - 29.0])
    assert rs["delta"] == pytest.approx(d.mean()) and rs["delta_n"] == 3 and rs["delta_low"] > 0
    assert rs["delta_text"] == f"+{d.mean():.1f} [+{rs['delta_low']:.1f}, +{rs['delta_high']:.1f}] (3)"
    fr = cell(tset.stats, "faster_rcnn", "rs")  # within seed noise: the interval straddles zero
    assert fr["delta_low"] < 0 < fr["delta_high"] and fr["delta_text"].startswith("+0.3 [-")


def test_no_baseline_value_and_unknown_detector():
    rows = [make_row("paa", "rs", 0, metrics=box(0.3)), make_row("paa", "focal", 0, "failed"),
            make_row("my_det", "rs", 0, metrics=box(0.3))]
    tset = build_tables(rows_frame(rows), paper=False)
    assert math.isnan(cell(tset.stats, "paa", "rs")["delta"])
    compare = tset.tables["coco"][1].frame
    assert "no baseline" in set(compare["Δ vs baseline"])
    assert "my_det" in set(tset.tables["coco"][0].frame["Detector"])  # shown by name


def test_published_numbers_beside_ours_with_sources(coco):
    tset = build_tables(load_frame(coco)[0])
    rs = cell(tset.stats, "atss", "rs")
    assert rs["paper"] == pytest.approx(39.9) and rs["paper_source"] == "RS release"
    assert cell(tset.stats, "atss", "focal")["paper_source"] == "RankSortLoss#13"
    # a published number stands beside a cell only when the cell runs its recipe (paper.py's ``beside``);
    # those of other recipes are named under the table, with theirs
    assert math.isnan(cell(tset.stats, "faster_rcnn", "ce")["paper"])
    apart = [n for n in tset.tables["coco"][1].notes if n.startswith("Published with recipes these cells do not run")]
    assert len(apart) == 1 and "Faster R-CNN CE 37.8 (aLRP release: CE + SmoothL1, R-50 FPN, 100 ep" in apart[0]
    assert cell(tset.stats, "faster_rcnn", "rs", "bbox_oLRP")["paper"] == pytest.approx(67.9)
    assert math.isnan(cell(tset.stats, "atss", "my_loss")["paper"])
    md = tset.markdown()
    # the ATSS block: its name on its first line only, then RS with ours, Δ, the published number, source
    assert re.search(r"\| ATSS \| CE \|[^\n]*\n\| +\| Focal † \|[^\n]*\| 39\.3 \| RankSortLoss#13 [^\n]*\n"
                     r"\| +\| aLRP \|[^\n]*\n\| +\| RS \| 3 done \| 36\.0 ± 2\.0 \(3\) \| \+4\.0 \[\+4\.0, \+4\.0\] \(3\) \| 39\.9 \| RS release", md)
    assert "official Rank & Sort Loss code release" in md  # the source is spelled out under the table
    metrics = tset.tables["coco"][2].frame
    assert "AP (paper)" in metrics.columns and "oLRP (paper)" in metrics.columns
    row = metrics[(metrics["Loss"] == "RS")].iloc[1]  # ATSS comes second
    assert row["AP (paper)"] == "39.9" and row["oLRP (paper)"] == "67.9"


def test_synthetic_experiments_compare_with_coco_and_say_so():
    rows = [make_row("atss", "rs", 0, metrics=box(0.3), kind="synthetic")]
    tset = build_tables(rows_frame(rows))
    assert cell(tset.stats, "atss", "rs")["paper"] == pytest.approx(39.9)
    assert "compare orderings, not magnitudes" in tset.markdown()


def lvis_rows():
    def m(ap, r):
        return {"bbox_AP": ap, "bbox_APr": r, "bbox_APc": ap, "bbox_APf": ap + 0.05, "segm_AP": ap - 0.01,
                "segm_APr": r, "segm_APc": ap, "segm_APf": ap + 0.04, "bbox_oLRP": 0.8, "segm_oLRP": 0.81}
    return [make_row("mask_rcnn", "ce", s, metrics=m(0.20 + 0.01 * s, 0.08), kind="lvis") for s in range(2)] + \
           [make_row("mask_rcnn", "rs", s, metrics=m(0.24 + 0.01 * s, 0.15), kind="lvis") for s in range(2)] + \
           [make_row("mask_rcnn", "focal", 0, "failed", kind="lvis")]


def test_lvis_tables_have_frequency_groups_and_lvis_numbers(tmp_path):
    folder = write_experiment(tmp_path / "lvis_exp", lvis_rows())
    tset = build_tables(load_frame(folder)[0], "segm_AP")
    assert list(tset.tables) == ["lvis rfs 0.001"]
    metrics = tset.tables["lvis rfs 0.001"][2].frame
    for col in ("AP", "APr", "APc", "APf", "mask AP", "mask APr", "mask APc", "mask APf", "oLRP", "mask oLRP"):
        assert col in metrics.columns, col
    rs = cell(tset.stats, "mask_rcnn", "rs", "segm_AP")
    assert rs["paper"] == pytest.approx(25.2) and rs["paper_source"] == "RS release"  # LVIS, not COCO's 36.4
    assert cell(tset.stats, "mask_rcnn", "rs", "bbox_APr")["delta"] == pytest.approx(15.0 - 8.0)
    assert cell(tset.stats, "mask_rcnn", "focal", "segm_AP")["text"] == "failed"
    assert metrics.loc[metrics["Loss"] == "RS", "mask APr"].item() == "15.0 ± 0.0"


def test_mask_only_detector_defaults_to_mask_ap_and_others_are_na():
    solo = {"segm_AP": 0.3, "segm_oLRP": 0.7}
    only_solo = rows_frame([make_row("solov2", "rs", 0, metrics=solo), make_row("solov2", "focal", 0, metrics=solo)])
    assert build_tables(only_solo, paper=False).metric == "segm_AP"
    mixed = rows_frame([make_row("my_masker", "rs", 0, metrics=solo), make_row("atss", "rs", 0, metrics=box(0.3)),
                        make_row("atss", "focal", 0, "failed"), make_row("solov2", "ce", 0, "failed"),
                        make_row("solov2", "rs", 0, metrics={**solo, "bbox_AP": 0.28})])
    tset = build_tables(mixed, paper=False)
    assert tset.metric == "bbox_AP"
    assert cell(tset.stats, "my_masker", "rs")["text"] == "n/a"  # an unknown detector with masks only
    # SOLOv2's box AP is that of its masks' tight boxes: a failed (or pending) SOLOv2 cell says so, not n/a
    assert cell(tset.stats, "solov2", "ce")["text"] == "failed"
    assert cell(tset.stats, "solov2", "rs")["mean"] == pytest.approx(28.0)
    assert cell(tset.stats, "atss", "rs", "segm_AP")["text"] == "n/a"
    assert cell(tset.stats, "atss", "focal")["text"] == "failed"


def test_several_datasets_are_never_averaged_together(tmp_path):
    rows = [make_row("atss", "rs", 0, metrics=box(0.3)), make_row("atss", "rs", 0, metrics=box(0.5), kind="synthetic")]
    folder = write_experiment(tmp_path / "two", rows)
    tset = build_tables(load_frame(folder)[0], paper=False)
    assert set(tset.tables) == {"coco", "synthetic"}
    assert cell(tset.stats, "atss", "rs", dataset="coco")["mean"] == pytest.approx(30.0)
    assert cell(tset.stats, "atss", "rs", dataset="synthetic")["mean"] == pytest.approx(50.0)
    written = write_tables(tset, load_frame(folder)[0], tmp_path / "out")
    assert "grid_bbox_AP_coco.md" in written and "grid_bbox_AP_synthetic.tex" in written


# ------------------------------------------------------------------------------------------------
# Rendering


def test_markdown_marks_best_in_bold_and_keeps_states(coco):
    grid = to_markdown(build_tables(load_frame(coco)[0], paper=False).tables["coco"][0])
    lines = {line.split(" | ")[0].strip("| "): line for line in grid.splitlines() if line.startswith("| ")}
    assert "| 41.0 ± 1.4 (2; 1 failed) |" in lines["Faster R-CNN"]  # top, but RS vs Focal has one common seed
    assert "| failed |" in lines["Faster R-CNN"] and "| — |" in lines["Faster R-CNN"]
    assert "31.0 ± 1.0 (3) †" in lines["Faster R-CNN"]  # the baseline is marked
    assert lines["Detector"] == "| Detector | CE | Focal | aLRP | RS | my_loss | Best (95 %) |"
    noisy = to_markdown(build_tables(rows_frame(noisy_rows()), paper=False).tables["coco"][0])
    lines = {line.split(" | ")[0].strip("| "): line for line in noisy.splitlines() if line.startswith("| ")}
    assert "| **36.2 ± 0.9 (3)** |" in lines["ATSS"] and lines["ATSS"].count("**") == 2
    assert "**" not in lines["Faster R-CNN"] + lines["YOLACT"] + lines["PAA"]
    assert ("Bold: a detector's highest mean, only where it beats every other loss of the detector beyond seed "
            "noise (paired t-test over seeds at 95 %: the interval of the difference excludes zero)") in noisy


def test_latex_is_booktabs_with_bfseries_best(coco):
    tset = build_tables(rows_frame(noisy_rows()), paper=False)
    tex = to_latex(tset.tables["coco"][0])
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrrl}"):
        assert rule in tex
    assert r"\bfseries 36.2 $\pm$ 0.9 (3)" in tex and tex.count(r"\bfseries") == 1  # ATSS RS only
    assert "RS (+5.7 [" in tex and "] (3) vs AP)" in tex  # the test's outcome, as in Markdown
    assert "% Bold: a detector's highest mean" in tex and "paired t-test over seeds at 95 %" in tex
    assert "RS $-$ CE: +0.3 [" in tex  # the minus sign is LaTeX's
    olrp = to_latex(build_tables(rows_frame(noisy_rows()), "bbox_oLRP", paper=False).tables["coco"][0])
    assert r"\bfseries 66.2 $\pm$ 0.8 (3)" in olrp  # lowest oLRP of ATSS
    tex = to_latex(build_tables(load_frame(coco)[0], paper=False).tables["coco"][0])
    assert r"my\_loss" in tex and "my_loss" not in tex.replace(r"my\_loss", "")
    assert r"$^\dagger$" in tex and "--" in tex  # baseline mark, missing cell
    compare = to_latex(build_tables(rows_frame(noisy_rows()), paper=False).tables["coco"][1])
    assert "] (3)" in compare and "$\\Delta$ vs baseline" in compare  # Δ with its interval and seeds


def test_csv_round_trips(coco, tmp_path):
    frame = load_frame(coco)[0]
    tset = build_tables(frame)
    written = write_tables(tset, frame, tmp_path / "t", formats=["csv"])
    assert set(written) == {"cells.csv", "runs.csv"}
    back = pd.read_csv(written["cells.csv"], keep_default_na=False, na_values=[""])
    expected = tset.stats.reset_index(drop=True)
    assert list(back.columns) == STAT_COLUMNS
    for col in ("n", "mean", "std", "delta", "delta_low", "delta_high", "delta_n", "test_n", "test_diff",
                "test_low", "test_high", "test_p", "paper", *("failed", "missing")):
        pd.testing.assert_series_equal(back[col].astype("float64"), expected[col].astype("float64"), check_names=False)
    for col in ("detector", "loss", "metric", "text", "delta_text", "test"):
        assert list(back[col].fillna("")) == list(expected[col].fillna(""))
    assert list(back["best"]) == list(expected["best"]) and list(back["top"]) == list(expected["top"])
    assert list(back["rival"].fillna("")) == list(expected["rival"].fillna(""))
    runs = pd.read_csv(written["runs.csv"])
    assert list(runs["run_id"]) == list(frame["run_id"])
    pd.testing.assert_series_equal(runs["bbox_AP"], frame["bbox_AP"])


def test_build_all_writes_every_format_atomically(coco):
    written = build_all(coco, plots=False)
    names = set(written)
    for n in ("tables/tables.md", "tables/grid_bbox_AP.md", "tables/grid_bbox_AP.tex", "tables/compare_bbox_AP.tex",
              "tables/metrics.md", "tables/metrics.tex", "tables/cells.csv", "tables/runs.csv"):
        assert n in names
    assert all(p.is_file() and p.stat().st_size > 0 for p in written.values())
    assert not list((coco / "tables").glob(".*tmp"))
    # Atomically: a writer killed (SIGKILL) half-way through a table leaves every file either its old
    # version or its new one, whole; never a part of one.
    new = {name: path.read_bytes() for name, path in written.items()}
    for path in written.values():
        path.write_bytes(b"old " + path.name.encode())
    script = textwrap.dedent(f"""
        import os
        from harness import files
        from harness.results.tables import build_all
        written = []
        def fsync(fd):  # the writer dies in its 4th file, half of it in the temporary file
            written.append(fd)
            if len(written) == 4:
                os.ftruncate(fd, 10)
                os.kill(os.getpid(), 9)
        files.os.fsync = fsync
        build_all({str(coco)!r}, plots=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    now = {name: path.read_bytes() for name, path in written.items()}
    assert {name for name in now if now[name] == new[name]}, "the killed writer had finished no table"
    assert {name for name in now if now[name] == b"old " + written[name].name.encode()}, "nothing was left old"
    assert all(now[name] in (new[name], b"old " + written[name].name.encode()) for name in now)
    with pytest.raises(TablesError, match="not a folder"):
        build_all(coco / "nope")
    with pytest.raises(TablesError, match="unknown metric 'bbox_XX'; the runs have: bbox_AP, bbox_AP50"):
        build_all(coco, "bbox_XX", plots=False)


# ------------------------------------------------------------------------------------------------
# The command


def test_table_command_prints_markdown_and_writes_files(coco, capsys):
    assert main(["table", str(coco)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("# Results: coco_exp") and "## AP by detector and loss" in out.out
    assert "wrote" in out.err
    assert (coco / "tables" / "grid_bbox_AP.tex").is_file() and (coco / "tables" / "cells.csv").is_file()


def test_table_command_formats_and_out(coco, capsys, tmp_path):
    assert main(["table", str(coco), "--format", "latex", "--metric", "bbox_oLRP", "--out", str(tmp_path / "x")]) == 0
    assert r"\toprule" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["compare_bbox_oLRP.tex", "grid_bbox_oLRP.tex",
                                                                  "metrics.tex"]
    assert main(["table", str(coco), "--format", "csv", "--out", str(tmp_path / "y")]) == 0
    assert capsys.readouterr().out.startswith("dataset,detector,loss,metric,n,mean,std")


@pytest.mark.parametrize("args, message", [
    (["missing-folder"], "is not a folder"),
    (["EMPTY"], "no result rows in"),
    (["COCO", "--metric", "bbox_XX"], "unknown metric 'bbox_XX'; the runs have: bbox_AP"),
])
def test_table_command_bad_input_is_one_line_exit_2(coco, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(coco) if a == "COCO" else str(tmp_path / "empty") if a == "EMPTY" else str(tmp_path / a) if a == "missing-folder" else a
            for a in args]
    assert main(["table", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("harness table: error:")


def test_corrupt_rows_are_reported(coco, capsys):
    (coco / "runs" / "broken.json").write_text('{"run_id": "bro')
    assert main(["table", str(coco), "--format", "md"]) == 0
    out = capsys.readouterr()
    assert "corrupt row" in out.err and "1 corrupt row file(s) left out" in out.out


# ------------------------------------------------------------------------------------------------
# The published numbers


def test_every_published_number_has_a_source_and_one_primary():
    paper = load_paper()
    assert len(paper) >= 30 and paper["source"].isin(list(SOURCES)).all()
    assert (paper[paper["primary"] == 1].groupby(KEY).size() == 1).all()
    assert set(paper["dataset"]) == {"coco", "lvis"}


@pytest.mark.skipif(not REFERENCE.is_file(), reason="the shared reference is not checked out beside the project")
def test_published_numbers_match_the_reference():
    text = REFERENCE.read_text()
    paper = load_paper()
    for _, r in paper[paper["unit"] == "percent"].iterrows():
        assert f"{r['value']:.1f}" in text, (r["detector"], r["loss"], r["metric"])
    coco = paper[(paper["dataset"] == "coco") & (paper["primary"] == 1)].set_index(["detector", "loss", "metric"])["value"]
    assert coco[("mask_rcnn", "rs", "segm_oLRP")] == 70.1 and coco[("paa", "ap", "bbox_AP")] == 37.3


def test_a_bad_paper_csv_is_refused(tmp_path):
    from harness.results.paper import PaperError

    bad = tmp_path / "p.csv"
    bad.write_text("dataset,detector,loss,metric,value,unit,variant,backbone,schedule,primary,source,notes\n"
                   "coco,atss,rs,bbox_AP,39.9,percent,RS,R-50,1x,1,,\n")
    with pytest.raises(PaperError, match="without a source"):
        load_paper(bad)
    bad.write_text(bad.read_text().replace(",1,,", ",0,RS release,"))
    with pytest.raises(PaperError, match="exactly one primary"):
        load_paper(bad)
    assert json.dumps(SOURCES)  # plain data


def test_runs_of_the_spec_without_a_row_are_unfinished(tmp_path):
    from harness.experiments.spec import parse_spec

    spec = parse_spec({"name": "exp", "dataset": {"kind": "coco"}, "detectors": ["atss"], "losses": ["focal", "ap", "rs"],
                       "seeds": [0, 1]}, name="exp", detectors=["atss", "paa"], losses_loader=lambda mods, origin="": ["focal", "ap", "rs"])
    done = {r.run_id: r for r in spec.runs()}
    rows = []
    for run_id, r in done.items():
        if r.loss == "focal" or (r.loss == "rs" and r.seed == 0):
            rows.append(make_row("atss", r.loss, r.seed, metrics=box(0.3 if r.loss == "focal" else 0.35), run_id=run_id))
    folder = write_experiment(tmp_path / "exp", rows)
    frame, _ = load_frame(folder, spec)
    assert len(frame) == 6 and set(frame["dataset"]) == {"coco"}
    stats = cell_stats(frame, paper=False)
    assert cell(stats, "atss", "ap")["text"] == "unfinished" and cell(stats, "atss", "ap")["unfinished"] == 2
    assert cell(stats, "atss", "rs")["text"] == "35.0 (1; 1 unfinished)"
    assert ("| ATSS | 30.0 ± 0.0 (2) † | unfinished | 35.0 (1; 1 unfinished) | none (RS vs Focal: 1 common seed) |"
            in build_tables(frame, paper=False).markdown())


def test_tiny_values_never_read_as_zero():
    from harness.results.tables import _fmt

    assert _fmt(12.345, "bbox_AP") == "12.3" and _fmt(0.0, "bbox_AP") == "0.0"
    assert _fmt(0.0404, "bbox_AP") == "0.04" and _fmt(0.00021, "bbox_AP") == "0.00021"  # not zero: not "0.0"
    assert _fmt(0.03, "bbox_AP", signed=True) == "+0.03" and _fmt(-0.0, "bbox_AP", signed=True) == "0.0"
    assert _fmt(0.5, "ratio") == "0.500"


def test_rows_of_runs_superseded_by_a_spec_change_do_not_count_as_seeds(tmp_path):
    import yaml

    from harness.experiments.spec import load_spec
    from harness.results.frame import load_experiment

    old = make_row("atss", "rs", 0, metrics=box(0.10))
    old["run_id"] = "atss-rs-s0-0ld0ld0ld0"
    old["provenance"] = {**old["provenance"], "finished_at": "2024-01-01T00:00:00"}
    folder = write_experiment(tmp_path / "exp", [old, make_row("atss", "rs", 0, metrics=box(0.40))])
    frame, rows, _ = load_experiment(folder)  # no spec: the latest row of a cell and seed
    assert [r["metrics"]["bbox_AP"] for r in rows] == [0.40] and frame.attrs["superseded"] == 1
    tset = build_tables(frame, "bbox_AP", paper=False)
    assert "1 older row(s)" in tset.summary and cell(tset.stats, "atss", "rs")["n"] == 1

    spec_path = tmp_path / "exp.yaml"
    spec_path.write_text(yaml.safe_dump({"detectors": ["atss"], "losses": ["rs"], "schedule": {"epochs": 3}}))
    spec = load_spec(spec_path)
    (run,) = spec.runs()
    current = make_row("atss", "rs", 0, metrics=box(0.25), run_id=run.run_id)
    current["provenance"] = {**current["provenance"], "finished_at": "2023-01-01T00:00:00"}  # older, but in the spec
    write_experiment(folder, [current])
    frame, rows, _ = load_experiment(folder, spec)  # with the spec: its runs only
    assert [r["run_id"] for r in rows] == [run.run_id] and frame.attrs["superseded"] == 2
    assert cell(build_tables(frame, "bbox_AP", paper=False).stats, "atss", "rs")["mean"] == 25.0  # ×100


# ------------------------------------------------------------------------------------------------
# One cell, one dataset; one fingerprint; every metric counted


def test_two_synthetic_datasets_of_one_kind_stay_apart_through_the_command(tmp_path, capsys):
    from harness.experiments.spec import parse_spec

    spec = parse_spec({"name": "two", "dataset": [{"kind": "synthetic", "train_images": 8},
                                                   {"kind": "synthetic", "train_images": 12}],
                       "detectors": ["atss"], "losses": ["focal"]}, name="two", detectors=["atss"],
                      losses_loader=lambda mods, origin="": ["focal"])
    rows = [make_row("atss", "focal", 0, metrics=box(0.10 if r.dataset["train_images"] == 8 else 0.40),
                     run_id=r.run_id, dataset=dict(r.dataset)) for r in spec.runs()]
    folder = write_experiment(tmp_path / "two", rows)
    tset = build_tables(load_frame(folder)[0], paper=False)
    assert set(tset.tables) == {"synthetic train 8", "synthetic train 12"}
    assert cell(tset.stats, "atss", "focal", dataset="synthetic train 8")["text"] == "10.0 (1)"
    assert cell(tset.stats, "atss", "focal", dataset="synthetic train 12")["text"] == "40.0 (1)"
    assert main(["table", str(folder), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "## Dataset: synthetic train 8" in out and "## Dataset: synthetic train 12" in out
    from harness.results.frame import dataset_label

    assert dataset_label({"kind": "lvis", "root": "/data/lvis", "repeat_factor": 0.001, "name": "v1"}) == \
        "lvis v1 root /data/lvis rfs 0.001"


def fingerprinted(row, digest, finished_at):
    row = copy.deepcopy(row)
    row["fingerprint"] = {"digest": digest, "components": {}}
    row["provenance"]["finished_at"] = finished_at
    return row


def test_a_cell_keeps_its_newest_fingerprint_and_says_how_many_rows_it_left_out(tmp_path, capsys):
    old = [fingerprinted(make_row("atss", "rs", s, metrics=box(0.10)), "old", f"2025-01-0{s + 1}T00:00:00")
           for s in range(3)]
    new = [fingerprinted(make_row("atss", "rs", 0, metrics=box(0.40), run_id=f"atss-rs-s{s}-new{s}"), "new",
                         "2025-02-01T00:00:00") for s in (0,)]
    other = [fingerprinted(make_row("atss", "focal", 0, metrics=box(0.30)), "old", "2025-01-01T00:00:00")]
    folder = write_experiment(tmp_path / "exp", old[1:] + new + other)  # seeds 1, 2 old; seed 0 new
    frame, rows, _ = load_experiment(folder)
    tset = build_tables(frame, paper=False)
    c = cell(tset.stats, "atss", "rs")
    assert c["n"] == 1 and c["mean"] == pytest.approx(40.0) and c["left_out"] == 2
    assert c["text"] == "40.0 (1; 2 older left out)"
    assert cell(tset.stats, "atss", "focal")["text"] == "30.0 (1)"  # another cell's own newest
    assert "2 row(s) of older fingerprints left out" in tset.summary
    assert main(["table", str(folder), "--format", "md"]) == 0
    assert "40.0 (1; 2 older left out)" in capsys.readouterr().out

    frame, _, _ = load_experiment(folder, all_fingerprints=True)
    tset = build_tables(frame, paper=False)
    c = cell(tset.stats, "atss", "rs")
    assert c["n"] == 3 and c["fingerprints"] == 2 and c["text"].endswith(" §") and c["text"].startswith("20.0 ± 17.3 (3)")
    assert "1 cell(s) mix rows of several fingerprints" in tset.summary
    assert main(["table", str(folder), "--format", "md", "--all-fingerprints"]) == 0
    assert "20.0 ± 17.3 (3) §" in capsys.readouterr().out


def test_a_seed_lacking_a_metric_is_counted_and_marked_not_silently_dropped():
    solo = {"segm_AP": 0.2, "segm_oLRP": 0.8, "bbox_AP": 0.2}
    rows = [make_row("solov2", "rs", 0, metrics=solo), make_row("solov2", "rs", 1, metrics=solo),
            make_row("solov2", "rs", 2, metrics={"bbox_AP": 0.0})]  # an older row: no mask metrics at all
    tset = build_tables(rows_frame(rows), "segm_AP", paper=False)
    c = cell(tset.stats, "solov2", "rs", "segm_AP")
    assert c["n"] == 2 and c["lacking"] == 1 and c["text"] == "20.0 ± 0.0 (2; 1 lack it)"
    assert cell(tset.stats, "solov2", "rs", "bbox_AP")["n"] == 3  # n is per metric
    assert "20.0 ± 0.0 (1 lack it)" in tset.markdown()  # the metrics table keeps the mark
    none_have = build_tables(rows_frame([make_row("mask_rcnn", "rs", 0, metrics={"bbox_AP": 0.1}),
                                         make_row("atss", "rs", 0, metrics={"bbox_AP": 0.1, "segm_AP": 0.1})]),
                             "segm_AP", paper=False)
    assert cell(none_have.stats, "mask_rcnn", "rs", "segm_AP")["text"] == "1 lack it"


def test_docs_list_every_cells_csv_column():
    """docs/tables.md's cells.csv table names each column the code writes (off_recipe was missing), and only those."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "tables.md").read_text()
    table = docs.split("`cells.csv` has one line per", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`([a-z_]+)`", table))  # `scale` is named in the line of `n`, `mean`, `std`
    first = {name for line in table.splitlines()[2:] for name in re.findall(r"`([a-z_]+)`", line.split(" | ")[0])}
    assert set(STAT_COLUMNS) - named == set() and first - set(STAT_COLUMNS) == set()


def test_an_own_dataset_section_says_its_class_count_and_files(tmp_path):
    """A result says exactly which data it came from: the heading of a coco_format dataset's section (and
    each table file's first line) gives its name, the number of classes its runs were evaluated on (the
    row's per_class) and its annotation files; runs.csv has the count per run."""
    ds = {"kind": "coco_format", "name": "my-insects", "train": {"ann": "/d/train.json", "images": "/d/train"},
          "val": {"ann": "/d/val.json", "images": "/d/val"}}
    per_class = {"bbox": [{"id": i, "name": f"c{i}", "AP": 0.1} for i in (7, 9, 15, 23)]}
    rows = [make_row("atss", loss, 0, metrics=box(0.2), dataset=dict(ds), per_class=per_class,
                     run_id=f"atss-{loss}-s0-own") for loss in ("focal", "rs")]
    frame = rows_frame(rows)
    assert list(frame["num_classes"]) == [4, 4]
    assert list(frame["dataset_val_ann"]) == ["/d/val.json"] * 2 and "dataset_val" not in frame.columns
    tset = build_tables(frame, paper=False)
    heading = "coco_format my-insects (4 classes; train /d/train.json; val /d/val.json)"
    assert f"## Dataset: {heading}" in tset.markdown()
    assert f"% dataset: {heading}" in tset.latex()
    written = write_tables(tset, frame, tmp_path / "tables")  # each table's own file says it too
    assert written["grid_bbox_AP.md"].read_text().startswith(f"Dataset: {heading}\n")
    assert written["metrics.tex"].read_text().startswith(f"% dataset: {heading}\n")
    runs = pd.read_csv(written["runs.csv"])  # plain paths, not a Python dict's repr
    assert list(runs["dataset_train_images"]) == ["/d/train"] * 2
