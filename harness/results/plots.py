"""Plots of an experiment with matplotlib's Agg backend (no display, no pyplot state).

- ``bar_<metric>.png``: a grouped bar chart of ``metric`` per detector, one bar per loss (mean over
  seeds, error bar ± std, ×100 for AP and oLRP); the best loss of each detector has a thick black
  edge; a dashed black line over a bar is the published number; a cell without a value is labelled
  with its state (``failed``, ``running``, ``—`` missing, ``n/a`` ...) instead of a bar.
- ``curves.png``: training loss (the rows' ``curve``: total loss per logged iteration) for every
  detector × loss cell, one line per seed; a failed run's line is dashed and ends in ×.
- ``curves/<detector>-<loss>.png``: one cell: the total loss per seed, and each loss component.

Files are written atomically (temporary file + rename). With several datasets in one experiment the
file names get ``_<dataset>``.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.results.frame import dataset_label, detector_label, loss_label, lower_is_better, metric_label, is_fraction

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def save_png_atomic(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Bar chart


def bar_figure(stats, metric: str, dataset: str, title: str = "") -> Figure:
    """Grouped bars of ``metric``: detectors on x, one bar per loss (from :func:`cell_stats`)."""
    s = stats[(stats["dataset"] == dataset) & (stats["metric"] == metric)]
    dets = list(dict.fromkeys(s["detector"]))
    losses = list(dict.fromkeys(s["loss"]))
    width = 0.8 / max(len(losses), 1)
    fig = Figure(figsize=(max(6.5, 0.32 * len(dets) * max(1, len(losses)) + 3.5), 4.6), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(len(losses))
    by = {(r.detector, r.loss): r for r in s.itertuples(index=False)}
    top = np.nanmax(np.r_[s["mean"].to_numpy(dtype=float) + s["std"].fillna(0).to_numpy(dtype=float),
                          s["paper"].to_numpy(dtype=float), [1.0]])
    any_paper = False
    for j, loss in enumerate(losses):
        for i, det in enumerate(dets):
            r = by.get((det, loss))
            x = i - 0.4 + width * (j + 0.5)
            if r is None:
                continue
            if r.n > 0:
                ax.bar(x, r.mean, width * 0.92, color=colours[j], edgecolor="black" if r.best else colours[j],
                       linewidth=2.2 if r.best else 0.5, zorder=2)
                if r.std == r.std and r.std > 0:
                    ax.errorbar(x, r.mean, yerr=r.std, color="black", capsize=2, linewidth=0.9, zorder=3)
            else:
                label = "missing" if r.text == "—" else r.text
                label = label if len(label) <= 16 else label[:15] + "…"
                ax.text(x, top * 0.02, label, rotation=90, ha="center", va="bottom", fontsize=7, color="dimgray")
            if r.paper == r.paper:
                any_paper = True
                ax.hlines(r.paper, x - width * 0.5, x + width * 0.5, colors="black", linestyles="--", linewidth=1.3,
                          zorder=4)
    ax.set_xticks(range(len(dets)), [detector_label(d) for d in dets])
    ax.set_xlim(-0.5, len(dets) - 0.5)
    unit = " (×100)" if is_fraction(metric) else ""
    direction = ", lower is better" if lower_is_better(metric) else ", higher is better"
    ax.set_ylabel(f"{metric_label(metric)}{unit}{direction}")
    ax.set_ylim(0, top * 1.12)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    handles = [Patch(color=colours[j], label=loss_label(l)) for j, l in enumerate(losses)]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.2, label="best of detector"))
    if any_paper:
        handles.append(Line2D([], [], color="black", linestyle="--", label="published"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0), frameon=False)
    ax.set_title(title or f"{metric_label(metric)} by detector and loss ({dataset}); mean ± std over seeds", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# Training curves


def parse_curve(curve: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A row's ``curve`` ([[iteration, total, {component: value}], ...]) as arrays; bad points skipped."""
    its, tot, comps = [], [], []
    for point in curve if isinstance(curve, list) else []:
        if not isinstance(point, (list, tuple)) or len(point) < 2:
            continue
        try:
            it, total = float(point[0]), float(point[1]) if point[1] is not None else math.nan
        except (TypeError, ValueError):
            continue
        its.append(it)
        tot.append(total)
        comps.append(point[2] if len(point) > 2 and isinstance(point[2], Mapping) else {})
    names = list(dict.fromkeys(k for c in comps for k in c))
    parts = {}
    for k in names:
        vals = []
        for c in comps:
            try:
                vals.append(float(c[k]) if c.get(k) is not None else math.nan)
            except (TypeError, ValueError):
                vals.append(math.nan)
        parts[k] = np.array(vals)
    return np.array(its), np.array(tot), parts


def _cell_runs(rows: Iterable[Mapping], dataset: str | None) -> dict[tuple[str, str], list[Mapping]]:
    cells: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        if dataset is not None and dataset_label(r.get("dataset")) != dataset:
            continue
        cells.setdefault((r.get("detector"), r.get("loss")), []).append(r)
    for runs in cells.values():
        runs.sort(key=lambda r: (r.get("seed") is None, r.get("seed") or 0, r.get("run_id", "")))
    return cells


def _plot_runs(ax, runs: list[Mapping]) -> int:
    """Total loss per seed on ``ax``; returns how many runs had a curve."""
    colours = _colours(len(runs))
    drawn = 0
    for k, r in enumerate(runs):
        its, tot, _ = parse_curve(r.get("curve"))
        if not len(its):
            continue
        drawn += 1
        failed = r.get("status") == "failed"
        ax.plot(its, tot, color="tab:red" if failed else colours[k], linestyle="--" if failed else "-", linewidth=1.1,
                label=f"seed {r.get('seed')}" + (" (failed)" if failed else ""))
        if failed:
            finite = np.isfinite(tot)
            if finite.any():
                last = np.flatnonzero(finite)[-1]
                ax.plot(its[last], tot[last], marker="x", color="tab:red", markersize=7)
    return drawn


def curves_figure(rows: Iterable[Mapping], stats, dataset: str, metric: str, title: str = "") -> Figure:
    """Every cell's training loss in one grid: detectors as rows, losses as columns. ``rows``: the result
    rows of ``dataset``."""
    s = stats[(stats["dataset"] == dataset) & (stats["metric"] == metric)]
    dets = list(dict.fromkeys(s["detector"]))
    losses = list(dict.fromkeys(s["loss"]))
    state = {(r.detector, r.loss): r for r in s.itertuples(index=False)}
    cells = _cell_runs(rows, None)
    w, h = 2.7 * len(losses) + 0.9, 2.0 * len(dets) + 0.9
    # Fixed margins (in inches, converted to fractions): a constrained layout costs seconds at 35 panels.
    fig = Figure(figsize=(w, h))
    axes = fig.subplots(len(dets), len(losses), squeeze=False,
                        gridspec_kw=dict(left=0.9 / w, right=1 - 0.15 / w, bottom=0.5 / h, top=1 - 0.75 / h,
                                         wspace=0.3, hspace=0.35))
    for i, det in enumerate(dets):
        for j, loss in enumerate(losses):
            ax = axes[i][j]
            drawn = _plot_runs(ax, cells.get((det, loss), []))
            if i == 0:
                ax.set_title(loss_label(loss), fontsize=10)
            if i == len(dets) - 1:
                ax.set_xlabel("iteration", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{detector_label(det)}\nloss", fontsize=9)
            if not drawn:
                r = state.get((det, loss))
                why = "no curve" + (f"\n({_runs_summary(r)})" if r is not None else "")
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="dimgray")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
    fig.suptitle(title or f"Training loss per cell ({dataset}); one line per seed, failed dashed", fontsize=11)
    return fig


def _runs_summary(r) -> str:
    from harness.results.frame import STATES

    parts = [f"{getattr(r, s)} {s}" for s in STATES if getattr(r, s)]
    return ", ".join(parts) if parts else "no run"


def cell_figure(runs: list[Mapping], detector: str, loss: str) -> Figure:
    """One cell: total loss per seed (left) and every loss component per seed (right)."""
    fig = Figure(figsize=(10, 3.8))
    ax_total, ax_parts = fig.subplots(1, 2, gridspec_kw=dict(left=0.07, right=0.98, bottom=0.14, top=0.84, wspace=0.2))
    _plot_runs(ax_total, runs)
    ax_total.set_title("total loss", fontsize=10)
    ax_total.set_xlabel("iteration")
    ax_total.grid(alpha=0.3)
    if ax_total.get_legend_handles_labels()[0]:
        ax_total.legend(fontsize=7)
    names = list(dict.fromkeys(k for r in runs for k in parse_curve(r.get("curve"))[2]))
    colours = dict(zip(names, _colours(len(names))))
    styles = ["-", "--", ":", "-."]
    for k, r in enumerate(runs):
        its, _, parts = parse_curve(r.get("curve"))
        for name, vals in parts.items():
            ax_parts.plot(its, vals, color=colours[name], linestyle=styles[k % len(styles)], linewidth=1.0,
                          label=name if k == 0 else None)
    ax_parts.set_title("components" + (" (line style: seed)" if len(runs) > 1 else ""), fontsize=10)
    ax_parts.set_xlabel("iteration")
    ax_parts.grid(alpha=0.3)
    if names:
        ax_parts.legend(fontsize=7)
    else:
        ax_parts.text(0.5, 0.5, "no components logged", ha="center", va="center", transform=ax_parts.transAxes)
    fig.suptitle(f"{detector_label(detector)} · {loss_label(loss)}: training loss", fontsize=11)
    return fig


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-") or "x"


def write_plots(rows: list[Mapping], tset, out: str | Path, title: str = "") -> dict[str, Path]:
    """All plots of a :class:`~harness.results.tables.TableSet` and its rows into folder ``out``;
    returns ``{file name relative to out: path}``."""
    out = Path(out)
    written: dict[str, Path] = {}
    datasets = list(tset.tables)
    for ds in datasets:
        suffix = f"_{_slug(ds)}" if len(datasets) > 1 else ""
        head = f"{title} — " if title else ""
        ds_rows = rows if len(datasets) == 1 else [r for r in rows if dataset_label(r.get("dataset")) == ds]
        fig = bar_figure(tset.stats, tset.metric, ds,
                         f"{head}{metric_label(tset.metric)} ({ds}): mean ± std over seeds")
        name = f"bar_{tset.metric}{suffix}.png"
        written[name] = save_png_atomic(fig, out / name)
        fig = curves_figure(ds_rows, tset.stats, ds, tset.metric,
                            f"{head}training loss ({ds}): one line per seed, failed runs dashed")
        name = f"curves{suffix}.png"
        written[name] = save_png_atomic(fig, out / name)
        for (det, loss), runs in sorted(_cell_runs(ds_rows, None).items(), key=lambda kv: str(kv[0])):
            if not any(len(parse_curve(r.get("curve"))[0]) for r in runs):
                continue
            name = f"curves{suffix}/{_slug(det)}-{_slug(loss)}.png"
            written[name] = save_png_atomic(cell_figure(runs, det, loss), out / name, dpi=90)
    return written
