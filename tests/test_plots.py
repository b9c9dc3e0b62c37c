"""Plots are real PNG files (signature, size, dimensions), written atomically, from hand-built rows:
the seeds plot of each metric (every seed's point, mean and spread, the separated best starred), the
training-curve grid and one figure per cell; `harness plot` and its errors."""

from __future__ import annotations

import math
import struct

import pytest

from harness.cli import main
from harness.results.frame import load_experiment, rows_frame
from harness.results.plots import PNG_SIGNATURE, parse_curve, seeds_figure, write_plots
from harness.rows import write_row
from harness.results.tables import build_all, build_tables
from test_tables import box, make_row, noisy_rows, write_experiment


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
    assert "seeds_bbox_AP.png" in written and "curves.png" in written
    # a seeds plot per main metric the runs have (the table's metric first)
    assert {"seeds_bbox_AP50.png", "seeds_bbox_oLRP.png", "seeds_segm_AP.png"} <= set(written)
    assert "curves/atss-rs.png" in written and "curves/atss-my_loss.png" in written  # failed runs have curves too
    assert "curves/solov2-focal.png" not in written  # no curve logged: no per-cell figure (the grid says so)
    for name, path in written.items():
        assert path.stat().st_size > 1000, name
        w, h = png_size(path)
        assert w > 300 and h > 200, name
    assert not list((tmp_path / "p").rglob(".*tmp"))
    w, h = png_size(written["curves.png"])  # 2 detectors x 3 losses: a grid wider than tall
    assert w > h


def test_plots_drawn_by_two_processes_are_the_serial_ones(experiment, tmp_path, monkeypatch):
    """With two cores a forked helper draws every other plot: the same files, byte for byte, as one process
    drawing them all; a plot that fails in the helper fails the call."""
    import os

    from harness.results import plots

    frame, rows, _ = load_experiment(experiment)
    tset = build_tables(frame, paper=False)
    helpers = []
    real_pool = plots.multiprocessing.get_context("fork").Pool

    def counting_pool(*a, **k):
        helpers.append(1)
        return real_pool(*a, **k)

    monkeypatch.setattr(plots, "_cores", lambda: 1)
    serial = write_plots(rows, tset, tmp_path / "one")
    ctx = plots.multiprocessing.get_context("fork")
    monkeypatch.setattr(ctx, "Pool", counting_pool)
    monkeypatch.setattr(plots.multiprocessing, "get_context", lambda method: ctx)
    monkeypatch.setattr(plots, "_cores", lambda: 2)
    parallel = write_plots(rows, tset, tmp_path / "two")
    assert helpers == [1]  # the helper drew
    assert sorted(serial) == sorted(parallel) and len(serial) >= 4
    for name in serial:
        assert serial[name].read_bytes() == parallel[name].read_bytes(), name

    parent = os.getpid()
    real_cell = plots.cell_figure

    def failing_in_helper(*a, **k):
        if os.getpid() != parent:
            raise RuntimeError("drawing failed in the helper")
        return real_cell(*a, **k)

    monkeypatch.setattr(plots, "cell_figure", failing_in_helper)
    with pytest.raises(RuntimeError, match="drawing failed in the helper"):
        write_plots(rows, tset, tmp_path / "three")


def _scatter_points(ax) -> list[tuple[float, float]]:
    from matplotlib.collections import PathCollection

    return [tuple(p) for c in ax.collections if isinstance(c, PathCollection) for p in c.get_offsets()]


def test_seeds_plot_shows_every_seed_and_stars_only_the_separated_best():
    rows = noisy_rows() + [make_row("atss", "ce", 0, "failed")]
    tset = build_tables(rows_frame(rows), paper=False)
    fig = seeds_figure(tset.values, tset.stats, "bbox_AP", "coco")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert list(panels) == ["Faster R-CNN", "ATSS", "PAA", "YOLACT"]
    atss = panels["ATSS"]
    ys = sorted(round(y, 1) for _, y in _scatter_points(atss))
    assert ys == sorted([30.0, 31.5, 29.0, 36.1, 37.2, 35.4, 29.0, 32.0, 30.5])  # every seed of every loss
    stars = [l for ax in fig.axes for l in ax.lines if l.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].axes is atss  # ATSS RS only: the others overlap within seed noise
    ticks = {t.get_text(): t.get_fontweight() for t in atss.get_xticklabels()}
    assert ticks["RS"] == "bold" and ticks["Focal †"] == "normal"
    assert "failed" in {t.get_text() for t in atss.texts}
    assert len(_scatter_points(panels["YOLACT"])) == 6


def test_seeds_plot_of_single_seeds_stars_nothing_and_says_why():
    rows = [make_row("atss", loss, 0, metrics=box(ap)) for loss, ap in (("focal", 0.1), ("rs", 0.4))]
    tset = build_tables(rows_frame(rows), paper=False)
    fig = seeds_figure(tset.values, tset.stats, "bbox_AP", "coco")
    assert not [l for ax in fig.axes for l in ax.lines if l.get_marker() == "*"]
    assert "One seed: seed noise cannot be measured" in " ".join(fig._suptitle.get_text().split())  # wrapped


def test_seeds_plot_of_a_metric_undefined_for_every_run_says_so_not_one_seed():
    """APl of three seeds on data without large objects: every run's value is undefined (NaN), so the
    plot has no seed at all; its title says why instead of "one seed"."""
    rows = [make_row("atss", loss, s, metrics=box(0.3 + 0.01 * s)) for loss in ("focal", "rs") for s in range(3)]
    rows.append(make_row("atss", "ap", 0, "failed"))
    tset = build_tables(rows_frame(rows), metric="bbox_APl", paper=False)
    assert tset.stats.loc[tset.stats["metric"] == "bbox_APl", "mean"].isna().all()
    fig = seeds_figure(tset.values, tset.stats, "bbox_APl", "coco")
    title = " ".join(fig._suptitle.get_text().split())
    assert "One seed" not in title and "seed noise" not in title
    assert title == ("APl (coco): no run has a value Undefined (n/d) for all 6 finished run(s): no ground truth or "
                     "detections of that kind in the evaluated images.")


def test_more_than_five_losses_are_plotted_and_tabled_in_order(tmp_path):
    losses = ("ce", "focal", "ap", "alrp", "rs", "bucketed_ap", "bucketed_rs", "my_loss")
    rows = [make_row("atss", loss, s, metrics=box(0.2 + 0.01 * i + 0.002 * s)) for i, loss in enumerate(losses)
            for s in range(2)]
    folder = write_experiment(tmp_path / "many", rows)
    written = build_all(folder)
    grid = build_tables(load_experiment(folder)[0], paper=False).tables["coco"][0].frame
    assert list(grid.columns) == ["Detector", "CE", "Focal", "AP", "aLRP", "RS", "Bucketed AP", "Bucketed RS",
                                  "my_loss", "Best (95 %)"]
    png_size(written["plots/seeds_bbox_AP.png"])


def test_parse_curve_skips_bad_points():
    its, tot, parts = parse_curve([[0, 2.0, {"a": 1.0}], "junk", [5], [10, None, {"a": None, "b": 2}], [20, "x"]])
    assert list(its) == [0, 10] and tot[0] == 2.0 and math.isnan(tot[1])
    assert set(parts) == {"a", "b"} and math.isnan(parts["a"][1]) and math.isnan(parts["b"][0])
    assert parse_curve(None)[0].size == 0


def test_mask_only_experiment_plots_mask_ap(tmp_path):
    rows = [make_row("solov2", loss, s, metrics={"segm_AP": 0.3 + 0.01 * s}) for loss in ("focal", "rs") for s in range(2)]
    folder = write_experiment(tmp_path / "solo", rows)
    written = build_all(folder)
    assert "plots/seeds_segm_AP.png" in written and "tables/grid_segm_AP.md" in written
    assert "Look first at `" in written["tables/tables.md"].read_text()  # the tables point at the plot
    png_size(written["plots/seeds_segm_AP.png"])


def test_plot_command(experiment, capsys):
    assert main(["plot", str(experiment), "--metric", "bbox_oLRP"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(experiment / "plots" / "seeds_bbox_oLRP.png") in printed
    png_size(experiment / "plots" / "seeds_bbox_oLRP.png")
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
    frame = rows_frame(rows, others=[{"run_id": "p", "detector": "atss", "loss": "focal", "seed": 0, "state": "unfinished"}])
    tset = build_tables(frame, paper=False)
    from harness.results.plots import curves_figure

    fig = curves_figure(rows, tset.stats, "coco", "bbox_AP")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("unfinished" in t for t in texts) and any("1 done" in t for t in texts)


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
    assert plots["plots/seeds_bbox_AP.png"].stat().st_mtime_ns != stamps["plots/seeds_bbox_AP.png"]
    stamps = {k: p.stat().st_mtime_ns for k, p in plots.items()}
    plots["plots/curves.png"].unlink()  # a plot deleted by hand: redraw
    build_all(folder)
    assert plots["plots/curves.png"].is_file()
    assert plots["plots/seeds_bbox_AP.png"].stat().st_mtime_ns != stamps["plots/seeds_bbox_AP.png"]


@pytest.mark.parametrize("detectors", [("atss",), ("atss", "mask_rcnn")])
def test_seeds_plot_title_fits_a_narrow_figure(detectors):
    """One or two detectors make a narrow figure: the title is wrapped to its width (it was cut at both
    edges) and stays above the panels' titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    own = {"kind": "coco_format", "name": "my-insects-with-a-long-name", "train": {"ann": "/d/t.json", "images": "/d"},
           "val": {"ann": "/d/v.json", "images": "/d"}}
    rows = [make_row(det, loss, 0, metrics=box(ap), dataset=dict(own)) for det in detectors
            for loss, ap in (("focal", 0.1), ("rs", 0.4))]
    tset = build_tables(rows_frame(rows), paper=False)
    fig = seeds_figure(tset.values, tset.stats, "bbox_AP", "coco_format my-insects-with-a-long-name")
    renderer = FigureCanvasAgg(fig).get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width and title.y1 <= fig.bbox.height, (title, fig.bbox)
    tops = [ax.title.get_window_extent(renderer).y1 for ax in fig.axes if ax.get_title()]
    assert tops and title.y0 >= max(tops), (title, tops)
    assert "One seed: seed noise cannot be measured" in " ".join(fig._suptitle.get_text().split())
