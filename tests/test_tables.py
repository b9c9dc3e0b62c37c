"""Tables from hand-built result rows: mean / std / count over seeds, failed / running / missing cells
shown (never dropped), best marked in the metric's direction, change vs baseline, published numbers
with their sources, LaTeX booktabs, CSV round trip, and the `harness table` command's errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.results.frame import load_frame, rows_frame
from harness.results.paper import KEY, SOURCES, load_paper
from harness.results.rows import write_json_atomic, write_row
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
                       "effective_batch": 2, "lr": 0.01, "recipe_batch": 16, "recipe_lr": 0.012, "wall_time_s": 41.2,
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
        {"run_id": "x1", "detector": "atss", "loss": "rs", "seed": 0, "state": "running"},
        {"run_id": "x2", "detector": "atss", "loss": "ap", "seed": 0, "state": "pending"},
        {"run_id": "x3", "detector": "atss", "loss": "alrp", "seed": 0, "state": "missing"}])
    assert len(frame) == 4 and set(frame["dataset"]) == {"coco"}  # the one known dataset is shared
    stats = cell_stats(frame, paper=False)
    assert cell(stats, "atss", "rs")["text"] == "running"
    assert cell(stats, "atss", "ap")["text"] == "pending"
    assert cell(stats, "atss", "alrp")["text"] == "—"
    assert cell(stats, "atss", "focal")["text"] == "30.0 (1)"


def test_manifest_runs_without_rows_are_shown(tmp_path):
    pytest.importorskip("harness.launch.status")
    folder = write_experiment(tmp_path / "e", [make_row("atss", "focal", 0, metrics=box(0.3))])
    write_json_atomic(folder / "manifest.json", {"runs": {"atss-rs-s0-q": {
        "detector": "atss", "loss": "rs", "seed": 0, "dataset": {"kind": "coco"}, "executor": "local", "job_id": None}}})
    frame, _ = load_frame(folder)
    assert set(frame["run_id"]) == {"atss-focal-s0-coco000000", "atss-rs-s0-q"}
    tset = build_tables(frame, paper=False)
    assert cell(tset.stats, "atss", "rs")["text"] == "pending"
    assert "pending" in tset.markdown()


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


def test_best_is_marked_in_the_metric_direction(coco):
    stats = cell_stats(load_frame(coco)[0], paper=False)
    ap_best = stats[(stats["metric"] == "bbox_AP") & stats["best"]]
    assert set(zip(ap_best["detector"], ap_best["loss"])) == {("atss", "rs"), ("faster_rcnn", "rs")}
    # oLRP: lower is better; ATSS RS has 67.0 ± 1.0, Focal 70.0; Faster R-CNN RS 63.0
    olrp_best = stats[(stats["metric"] == "bbox_oLRP") & stats["best"]]
    assert set(zip(olrp_best["detector"], olrp_best["loss"])) == {("atss", "rs"), ("faster_rcnn", "rs")}
    assert cell(stats, "atss", "my_loss", "bbox_oLRP")["best"] == False  # noqa: E712 (highest is worst)
    assert bool(cell(stats, "atss", "rs", "bbox_oLRP")["lower_is_better"])


def test_ties_as_shown_are_all_marked_and_a_lone_value_is_not():
    rows = [make_row("paa", "focal", 0, metrics=box(0.3001)), make_row("paa", "rs", 0, metrics=box(0.2999)),
            make_row("paa", "ce", 0, metrics=box(0.1)), make_row("yolact", "rs", 0, metrics=box(0.3))]
    stats = cell_stats(rows_frame(rows), paper=False)
    assert cell(stats, "paa", "focal")["best"] and cell(stats, "paa", "rs")["best"]  # both show 30.0
    assert not cell(stats, "paa", "ce")["best"]
    assert not cell(stats, "yolact", "rs")["best"]  # nothing to compare with


def test_change_vs_baseline(coco):
    stats = cell_stats(load_frame(coco)[0], paper=False)
    rs = cell(stats, "atss", "rs")
    assert rs["baseline_loss"] == "focal" and rs["delta"] == pytest.approx(36.0 - 32.0)
    assert cell(stats, "faster_rcnn", "rs")["baseline_loss"] == "ce"
    assert cell(stats, "faster_rcnn", "rs")["delta"] == pytest.approx(41.0 - 31.0)
    assert cell(stats, "atss", "rs", "bbox_oLRP")["delta"] == pytest.approx(67.0 - 70.0)  # negative: better
    assert cell(stats, "atss", "focal")["delta"] == 0
    compare = build_tables(load_frame(coco)[0], paper=False).tables["coco"][1].frame
    atss = compare.index[compare["Detector"] == "ATSS"][0]
    by_loss = dict(zip(compare["Loss"][atss:atss + 5], compare["Δ vs baseline"][atss:atss + 5]))
    assert by_loss["Focal †"] == "baseline" and by_loss["RS"] == "+4.0" and by_loss["CE"] == "-12.0"
    assert by_loss["aLRP"] == "-2.0" and by_loss["my_loss"] == "-22.0"
    fr = compare.index[compare["Detector"] == "Faster R-CNN"][0]
    assert compare.loc[fr + 4, "Loss"] == "my_loss" and compare.loc[fr + 4, "Δ vs baseline"] == ""  # missing


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
    assert cell(tset.stats, "faster_rcnn", "ce")["paper"] == pytest.approx(37.8)  # SmoothL1, the primary one
    assert cell(tset.stats, "faster_rcnn", "rs", "bbox_oLRP")["paper"] == pytest.approx(67.9)
    assert math.isnan(cell(tset.stats, "atss", "my_loss")["paper"])
    md = tset.markdown()
    # the ATSS block: its name on its first line only, then RS with ours, Δ, the published number, source
    assert re.search(r"\| ATSS \| CE \|[^\n]*\n\| +\| Focal † \|[^\n]*\| 39\.3 \| RankSortLoss#13 [^\n]*\n"
                     r"\| +\| aLRP \|[^\n]*\n\| +\| RS \| 3 done \| \*\*36\.0 ± 2\.0 \(3\)\*\* \| \+4\.0 \| 39\.9 \| RS release", md)
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
    tset = build_tables(load_frame(coco)[0], paper=False)
    grid = to_markdown(tset.tables["coco"][0])
    lines = {line.split(" | ")[0].strip("| "): line for line in grid.splitlines() if line.startswith("| ")}
    assert "**41.0 ± 1.4 (2; 1 failed)**" in lines["Faster R-CNN"]
    assert "| failed |" in lines["Faster R-CNN"] and "| — |" in lines["Faster R-CNN"]
    assert "31.0 ± 1.0 (3) †" in lines["Faster R-CNN"]  # the baseline is marked
    assert lines["Detector"] == "| Detector | CE | Focal | aLRP | RS | my_loss |"


def test_latex_is_booktabs_with_bfseries_best(coco):
    tset = build_tables(load_frame(coco)[0], paper=False)
    tex = to_latex(tset.tables["coco"][0])
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrrr}"):
        assert rule in tex
    assert r"\bfseries 36.0 $\pm$ 2.0 (3)" in tex  # ATSS RS, the best of ATSS
    assert r"my\_loss" in tex and "my_loss" not in tex.replace(r"my\_loss", "")
    assert r"$^\dagger$" in tex and "--" in tex  # baseline mark, missing cell
    olrp = to_latex(build_tables(load_frame(coco)[0], "bbox_oLRP", paper=False).tables["coco"][0])
    assert r"\bfseries 63.0 $\pm$ 1.4 (2; 1 failed)" in olrp  # lowest oLRP of Faster R-CNN


def test_csv_round_trips(coco, tmp_path):
    frame = load_frame(coco)[0]
    tset = build_tables(frame)
    written = write_tables(tset, frame, tmp_path / "t", formats=["csv"])
    assert set(written) == {"cells.csv", "runs.csv"}
    back = pd.read_csv(written["cells.csv"], keep_default_na=False, na_values=[""])
    expected = tset.stats.reset_index(drop=True)
    assert list(back.columns) == STAT_COLUMNS
    for col in ("n", "mean", "std", "delta", "paper", *("failed", "missing")):
        pd.testing.assert_series_equal(back[col].astype("float64"), expected[col].astype("float64"), check_names=False)
    for col in ("detector", "loss", "metric", "text"):
        assert list(back[col]) == list(expected[col])
    assert list(back["best"]) == list(expected["best"])
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


def test_runs_of_the_spec_never_submitted_are_missing(tmp_path):
    from harness.experiments.spec import parse_spec

    spec = parse_spec({"name": "exp", "dataset": {"kind": "coco"}, "detectors": ["atss"], "losses": ["focal", "ap", "rs"],
                       "seeds": [0, 1]}, name="exp", detectors=["atss", "paa"], losses_loader=lambda mods: ["focal", "ap", "rs"])
    done = {r.run_id: r for r in spec.runs()}
    rows = []
    for run_id, r in done.items():
        if r.loss == "focal" or (r.loss == "rs" and r.seed == 0):
            rows.append(make_row("atss", r.loss, r.seed, metrics=box(0.3 if r.loss == "focal" else 0.35), run_id=run_id))
    folder = write_experiment(tmp_path / "exp", rows)
    frame, _ = load_frame(folder, spec)
    assert len(frame) == 6 and set(frame["dataset"]) == {"coco"}
    stats = cell_stats(frame, paper=False)
    assert cell(stats, "atss", "ap")["text"] == "—" and cell(stats, "atss", "ap")["missing"] == 2
    assert cell(stats, "atss", "rs")["text"] == "35.0 (1; 1 missing)"
    assert "| ATSS | 30.0 ± 0.0 (2) † | — | **35.0 (1; 1 missing)** |" in build_tables(frame, paper=False).markdown()


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
