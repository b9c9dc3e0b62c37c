"""Plots are real PNG files (signature, size, dimensions), written atomically, from hand-built rows:
the bar chart of a metric, the training-curve grid and one figure per cell; `harness plot` and its
errors."""

from __future__ import annotations

import math
import struct

import pytest

from harness.cli import main
from harness.results.frame import load_experiment, rows_frame
from harness.results.plots import PNG_SIGNATURE, bar_figure, parse_curve, write_plots
from harness.results.rows import write_row
from harness.results.tables import build_all, build_tables
from test_tables import box, make_row, write_experiment


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def small_rows():
    rows = []
    for s in range(2):
        rows.append(make_row("atss", "focal", s, metrics=box(0.30 + 0.02 * s, olrp=0.70)))
        rows.append(make_row("atss", "rs", s, metrics=box(0.35 + 0.02 * s, olrp=0.66)))
        rows.append(make_row("solov2", "rs", s, metrics={"segm_AP": 0.3, "segm_oLRP": 0.7}))
    rows.append(make_row("atss", "my_loss", 0, "failed",
                         curve=[[0, 2.0, {"loss_cls": 1.5}], [10, 1.0, {"loss_cls": 0.8}], [20, float("nan"), {"loss_cls": None}]]))
    rows.append(make_row("solov2", "focal", 0, metrics={"segm_AP": 0.28, "segm_oLRP": 0.72}, curve=[]))
    return rows


@pytest.fixture
def experiment(tmp_path):
    return write_experiment(tmp_path / "plots_exp", small_rows())


def test_write_plots_makes_real_pngs(experiment, tmp_path):
    frame, rows, _ = load_experiment(experiment)
    tset = build_tables(frame, paper=False)
    written = write_plots(rows, tset, tmp_path / "p")
    assert "bar_bbox_AP.png" in written and "curves.png" in written
    assert "curves/atss-rs.png" in written and "curves/atss-my_loss.png" in written  # failed runs have curves too
    assert "curves/solov2-focal.png" not in written  # no curve logged: no per-cell figure (the grid says so)
    for name, path in written.items():
        assert path.stat().st_size > 1000, name
        w, h = png_size(path)
        assert w > 300 and h > 200, name
    assert not list((tmp_path / "p").rglob(".*tmp"))
    w, h = png_size(written["curves.png"])  # 2 detectors x 3 losses: a grid wider than tall
    assert w > h


def test_bar_chart_draws_one_bar_per_valued_cell_and_labels_the_rest(experiment):
    frame, _, _ = load_experiment(experiment)
    tset = build_tables(frame)
    fig = bar_figure(tset.stats, "bbox_AP", "coco")
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # ATSS Focal and RS; my_loss failed, these SOLOv2 rows carry no box AP
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx([31.0, 36.0])
    labels = {t.get_text() for t in ax.texts}
    # ATSS my_loss failed; SOLOv2 (box AP from its masks) has rows without one (n/d) and no my_loss run
    assert labels == {"failed", "n/d", "missing"}
    best = max(ax.patches, key=lambda p: p.get_height())
    assert best.get_linewidth() > 2  # the best of ATSS has a thick edge
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ATSS", "SOLOv2"]
    assert len(ax.collections) >= 1  # the published ATSS numbers are drawn as dashed lines


def test_parse_curve_skips_bad_points():
    its, tot, parts = parse_curve([[0, 2.0, {"a": 1.0}], "junk", [5], [10, None, {"a": None, "b": 2}], [20, "x"]])
    assert list(its) == [0, 10] and tot[0] == 2.0 and math.isnan(tot[1])
    assert set(parts) == {"a", "b"} and math.isnan(parts["a"][1]) and math.isnan(parts["b"][0])
    assert parse_curve(None)[0].size == 0


def test_mask_only_experiment_plots_mask_ap(tmp_path):
    rows = [make_row("solov2", loss, s, metrics={"segm_AP": 0.3 + 0.01 * s}) for loss in ("focal", "rs") for s in range(2)]
    folder = write_experiment(tmp_path / "solo", rows)
    written = build_all(folder)
    assert "plots/bar_segm_AP.png" in written and "tables/grid_segm_AP.md" in written
    png_size(written["plots/bar_segm_AP.png"])


def test_plot_command(experiment, capsys):
    assert main(["plot", str(experiment), "--metric", "bbox_oLRP"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(experiment / "plots" / "bar_bbox_oLRP.png") in printed
    png_size(experiment / "plots" / "bar_bbox_oLRP.png")
    png_size(experiment / "plots" / "curves.png")


def test_plot_command_bad_input(experiment, tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["plot", str(experiment), "--metric", "AP"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown metric 'AP'; the runs have: bbox_AP" in err
    assert not (experiment / "plots").exists()


def test_plots_of_runs_without_curves_or_rows():
    rows = [make_row("atss", "rs", 0, metrics=box(0.3), curve=[])]
    frame = rows_frame(rows, others=[{"run_id": "p", "detector": "atss", "loss": "focal", "seed": 0, "state": "running"}])
    tset = build_tables(frame, paper=False)
    from harness.results.plots import curves_figure

    fig = curves_figure(rows, tset.stats, "coco", "bbox_AP")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("running" in t for t in texts) and any("1 done" in t for t in texts)


def test_unchanged_inputs_reuse_the_plots_and_any_change_redraws(tmp_path):
    rows = [make_row("atss", loss, 0, metrics=box(0.3)) for loss in ("focal", "rs")]
    folder = write_experiment(tmp_path / "cache", rows)
    first = build_all(folder)
    plots = {k: p for k, p in first.items() if k.startswith("plots/")}
    stamps = {k: p.stat().st_mtime_ns for k, p in plots.items()}
    again = build_all(folder)
    assert {k: p for k, p in again.items() if k.startswith("plots/")} == plots
    assert {k: p.stat().st_mtime_ns for k, p in plots.items()} == stamps  # not redrawn
    write_row(folder, make_row("atss", "rs", 0, metrics=box(0.4)))  # a result changes: redraw
    build_all(folder)
    assert plots["plots/bar_bbox_AP.png"].stat().st_mtime_ns != stamps["plots/bar_bbox_AP.png"]
    stamps = {k: p.stat().st_mtime_ns for k, p in plots.items()}
    plots["plots/curves.png"].unlink()  # a plot deleted by hand: redraw
    build_all(folder)
    assert plots["plots/curves.png"].is_file()
    assert plots["plots/bar_bbox_AP.png"].stat().st_mtime_ns != stamps["plots/bar_bbox_AP.png"]
