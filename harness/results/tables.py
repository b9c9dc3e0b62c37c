"""Paper-style tables from an experiment's result rows: Markdown, LaTeX (booktabs) and CSV.

Everything is computed from the tidy frame (:mod:`harness.results.frame`) by one ``groupby`` per
quantity; the cost grows with the number of cells (detector × loss × metric), not of runs.

:func:`cell_stats` gives one line per (dataset, detector, loss, metric) *cell*: the number of runs with
a value ``n``, ``mean`` and ``std`` over seeds (sample std, ddof 1; in points, i.e. ×100, for AP and
oLRP), the count of runs in each state, whether the cell is the ``best`` of its detector (highest mean,
or lowest for oLRP), the ``delta`` to the detector's baseline loss, the published number beside it
(``paper``, ``paper_source``) and the ``text`` shown in the tables. Three tables are built from it:

- ``grid_<metric>``: detectors × losses for one metric (``mean ± std (n)``);
- ``compare_<metric>``: one line per detector × loss: runs, the metric, change vs baseline, the
  published number and its source;
- ``metrics``: one line per detector × loss, a column per metric (AP, AP50, AP75, APs/m/l, APr/c/f,
  mask AP, oLRP), each published number in a column beside ours.

Cells without a value say why: ``failed``, ``running``, ``pending``, ``interrupted``, ``lost``, ``—``
(missing: no run), ``n/a`` (the detector does not predict that metric, e.g. mask AP of ATSS), ``n/d``
(not defined: runs finished but the metric had nothing to average, e.g. APl without large objects).
:func:`build_all` writes everything (and the plots) for an experiment folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from harness.results.frame import (
    BASELINES,
    DETECTOR_OUTPUTS,
    DETECTORS,
    LOSSES,
    STATES,
    default_metric,
    detector_label,
    is_fraction,
    load_experiment,
    loss_label,
    lower_is_better,
    metric_columns,
    metric_family,
    metric_label,
    order_names,
)

KEYS = ["dataset", "detector", "loss"]
NOT_APPLICABLE = "n/a"
NOT_DEFINED = "n/d"
MISSING = "—"
BASELINE_MARK = "†"
FORMATS = ("md", "latex", "csv")
# The metric columns of the ``metrics`` table (those some run has), in this order.
MAIN_METRICS = ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "bbox_APr", "bbox_APc",
                "bbox_APf", "segm_AP", "segm_APr", "segm_APc", "segm_APf", "bbox_oLRP", "segm_oLRP")
STAT_COLUMNS = ["dataset", "detector", "loss", "metric", "n", "mean", "std", "scale", "runs", *STATES, "applicable",
                "lower_is_better", "best", "baseline_loss", "baseline_mean", "delta", "paper", "paper_source",
                "paper_variant", "text"]


class TablesError(ValueError):
    """Input the tables cannot be built from (no runs, an unknown metric); one-line message."""


# ------------------------------------------------------------------------------------------------
# Cell statistics


def _decimals(metric: str) -> int:
    return 1 if is_fraction(metric) else 3


def _fmt(value: float, metric: str, signed: bool = False) -> str:
    """One decimal for ×100 metrics, three otherwise. A value that is not zero but rounds to 0.0 shows
    two significant digits (0.04), so a tiny measurement never reads as a zero."""
    d = _decimals(metric)
    s = f"{value:+.{d}f}" if signed else f"{value:.{d}f}"
    if d == 1 and float(s) == 0:
        return "0.0" if value == 0 else (f"{value:+.2g}" if signed else f"{value:.2g}")
    return s


def _paper_frame(paper: pd.DataFrame | None | bool) -> pd.DataFrame | None:
    if paper is False:
        return None
    if paper is None or paper is True:
        from harness.results.paper import paper_for_tables

        return paper_for_tables()
    return paper


def cell_stats(frame: pd.DataFrame, metrics: Iterable[str] | None = None, paper: pd.DataFrame | bool | None = None) -> pd.DataFrame:
    """One line per (dataset, detector, loss, metric) cell, columns :data:`STAT_COLUMNS`.

    Every detector × loss of a dataset is a cell, also those with no run (``missing`` = 0 runs: shown
    ``—``). ``metrics``: default every metric some run has. ``paper``: the published numbers
    (:func:`harness.results.paper.paper_for_tables`; ``False``: none)."""
    if frame.empty:
        raise TablesError("no runs: the experiment has no result rows and no submitted runs")
    metrics = list(metrics) if metrics is not None else metric_columns(frame)
    for m in metrics:
        if m not in frame.columns:
            frame = frame.assign(**{m: np.nan})
    datasets = sorted(frame["dataset"].unique())
    index_tuples = []
    for ds in datasets:
        sub = frame[frame["dataset"] == ds]
        dets = order_names(sub["detector"].dropna(), DETECTORS)
        losses = order_names(sub["loss"].dropna(), LOSSES)
        index_tuples += [(ds, d, l) for d in dets for l in losses]
    cells = pd.MultiIndex.from_tuples(index_tuples, names=KEYS)

    counts = frame.groupby(KEYS + ["state"], sort=False).size().unstack("state", fill_value=0)
    counts = counts.reindex(index=cells, columns=list(STATES), fill_value=0).astype("int64")
    counts["runs"] = counts[list(STATES)].sum(axis=1)
    # A cell that no run ever belonged to is missing (as is a run the spec lists but nobody submitted).
    counts["missing"] = counts["missing"].where(counts["runs"] > 0, 0)

    done = frame[frame["status"] == "done"]
    if metrics:
        agg = done.groupby(KEYS, sort=False)[metrics].agg(["count", "mean", "std"])
        agg.columns = agg.columns.set_names(["metric", "stat"])
        vals = agg.stack(level="metric", future_stack=True) if len(agg) else None
    else:
        vals = None
    full = pd.MultiIndex.from_tuples([(*c, m) for c in index_tuples for m in metrics], names=KEYS + ["metric"])
    stats = pd.DataFrame(index=full)
    if vals is not None:
        vals = vals.reindex(full)
        stats["n"] = vals["count"].fillna(0).astype("int64")
        stats["mean"], stats["std"] = vals["mean"].astype("float64"), vals["std"].astype("float64")
    else:
        stats["n"], stats["mean"], stats["std"] = 0, np.nan, np.nan
    stats = stats.reset_index()
    scale = np.where(stats["metric"].map(is_fraction).astype(bool), 100.0, 1.0)
    stats["scale"] = scale
    stats["mean"] *= scale
    stats["std"] *= scale
    stats = stats.merge(counts.reset_index(), on=KEYS, how="left")

    stats["applicable"] = _applicable(stats, done)
    stats["lower_is_better"] = stats["metric"].map(lower_is_better).astype(bool)
    stats = _best(stats)
    stats = _delta(stats)
    stats = _paper(stats, _paper_frame(paper))
    stats["text"] = [_cell_text(r) for r in stats.itertuples(index=False)]
    return stats[STAT_COLUMNS]


def _applicable(stats: pd.DataFrame, done: pd.DataFrame) -> pd.Series:
    """False where the detector does not predict the metric's family (box or mask): known detectors by
    what they output or have values for; other detectors by whether a finished run has the family."""
    fams = {m: metric_family(m) for m in stats["metric"].unique()}
    has: dict[tuple, bool] = {}
    det_done = set(zip(done["dataset"], done["detector"]))
    for fam in ("bbox", "segm"):
        cols = [c for c in done.columns if metric_family(c) == fam]
        if cols and len(done):
            g = done[cols].notna().any(axis=1).groupby([done["dataset"], done["detector"]]).any()
            has.update({(ds, d, fam): bool(v) for (ds, d), v in g.items()})
    out = []
    for ds, det, m in zip(stats["dataset"], stats["detector"], stats["metric"]):
        fam = fams[m]
        if fam is None or has.get((ds, det, fam)):
            out.append(True)
        elif det in DETECTOR_OUTPUTS:
            out.append(fam in DETECTOR_OUTPUTS[det])
        else:
            out.append((ds, det) not in det_done)
    return pd.Series(out, index=stats.index, dtype=bool)


def _best(stats: pd.DataFrame) -> pd.DataFrame:
    """The best loss of each detector (dataset, metric), in the metric's direction, compared as shown
    (rounded), so that equal shown values are all marked; only where two or more cells have a value."""
    decimals = stats["metric"].map(_decimals)
    shown = pd.Series([round(v, d) if v == v else np.nan for v, d in zip(stats["mean"], decimals)], index=stats.index)
    signed = shown.where(~stats["lower_is_better"], -shown)
    valued = stats["n"] > 0
    grp = [stats["dataset"], stats["detector"], stats["metric"]]
    top = signed.where(valued).groupby(grp).transform("max")
    many = valued.groupby(grp).transform("sum") >= 2
    stats["best"] = (valued & many & (signed == top)).astype(bool)
    return stats


def _delta(stats: pd.DataFrame) -> pd.DataFrame:
    stats["baseline_loss"] = stats["detector"].map(BASELINES)
    base = stats.loc[stats["n"] > 0, ["dataset", "detector", "loss", "metric", "mean"]].rename(
        columns={"loss": "baseline_loss", "mean": "baseline_mean"})
    stats = stats.merge(base, on=["dataset", "detector", "baseline_loss", "metric"], how="left")
    stats["delta"] = stats["mean"] - stats["baseline_mean"]
    return stats


def _paper(stats: pd.DataFrame, paper: pd.DataFrame | None) -> pd.DataFrame:
    if paper is None or paper.empty:
        for c in ("paper", "paper_source", "paper_variant"):
            stats[c] = np.nan if c == "paper" else None
        return stats
    from harness.results.paper import DATASET_FOR_KIND

    kind = stats["dataset"].str.split(" ").str[0]
    stats["_pds"] = kind.map(DATASET_FOR_KIND)
    p = paper.rename(columns={"dataset": "_pds"})[["_pds", "detector", "loss", "metric", "paper", "paper_source",
                                                    "paper_variant"]]
    stats = stats.merge(p, on=["_pds", "detector", "loss", "metric"], how="left")
    return stats.drop(columns="_pds")


def _states_text(r) -> str:
    parts = [(s, getattr(r, s)) for s in STATES[1:] if getattr(r, s)]
    if not parts:
        return MISSING
    if len(parts) == 1:
        return MISSING if parts[0][0] == "missing" else parts[0][0]
    return ", ".join(f"{n} {s}" for s, n in parts)


def _cell_text(r) -> str:
    if not r.applicable:
        return NOT_APPLICABLE
    if r.n > 0:
        text = _fmt(r.mean, r.metric)
        if r.std == r.std:
            text += f" ± {_fmt(r.std, r.metric)}"
        extra = [f"{getattr(r, s)} {s}" for s in STATES[1:] if getattr(r, s)]
        if r.done > r.n:
            extra.insert(0, f"{r.done - r.n} {NOT_DEFINED}")
        return f"{text} ({'; '.join([str(r.n)] + extra)})"
    if r.done > 0:
        others = [f"{getattr(r, s)} {s}" for s in STATES[1:] if getattr(r, s)]
        return NOT_DEFINED + (f" ({'; '.join(others)})" if others else "")
    return _states_text(r)


# ------------------------------------------------------------------------------------------------
# Tables


@dataclass
class Table:
    """A table to render: display strings, which cells to mark as best, a title and notes."""

    name: str
    title: str
    frame: pd.DataFrame
    bold: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    left: tuple[str, ...] = ("Detector", "Loss")  # left-aligned columns; the others are right-aligned


def _runs_text(r) -> str:
    parts = [f"{getattr(r, s)} {s}" for s in STATES if getattr(r, s)]
    return ", ".join(parts) if parts else MISSING


def _delta_text(r) -> str:
    if r.n == 0 or not r.applicable:
        return ""
    if not isinstance(r.baseline_loss, str):
        return ""
    if r.loss == r.baseline_loss:
        return "baseline"
    if r.delta != r.delta:
        return "no baseline"
    return _fmt(r.delta, r.metric, signed=True)


def _legend(metric: str | None = None) -> str:
    direction = ""
    if metric is not None:
        direction = (" (lowest: lower is better)" if lower_is_better(metric) else " (highest)")
    return (f"Values: mean ± std over seeds (n = runs with a value), ×100 for AP and oLRP. Bold: best loss of "
            f"the detector{direction}. {BASELINE_MARK}: the detector's baseline loss. "
            f"{MISSING}: no run; n/a: the detector does not predict this metric; n/d: not defined on this data; "
            "failed / running / pending / interrupted / lost: the runs' states.")


def _paper_note(stats: pd.DataFrame) -> str | None:
    used = stats.dropna(subset=["paper"])
    if used.empty:
        return None
    from harness.results.paper import SOURCES

    srcs = sorted(set(used["paper_source"]))
    kinds = set(used["dataset"].str.split(" ").str[0])
    synth = " Ours are on synthetic data with the tiny profile: compare orderings, not magnitudes." \
        if any(k.startswith("synthetic") for k in kinds) else ""
    return ("Published numbers (COCO val2017 / LVIS v1 val, R-50 unless noted; experiments/paper_results.csv): "
            + "; ".join(f"{s}: {SOURCES.get(s, s)}" for s in srcs) + "." + synth)


def grid_table(stats: pd.DataFrame, metric: str, dataset: str) -> Table:
    """Detectors × losses for ``metric``."""
    s = stats[(stats["dataset"] == dataset) & (stats["metric"] == metric)]
    dets = list(dict.fromkeys(s["detector"]))
    losses = list(dict.fromkeys(s["loss"]))
    text = s.assign(text=[t + (f" {BASELINE_MARK}" if l == b else "")
                          for t, l, b in zip(s["text"], s["loss"], s["baseline_loss"])])
    wide = text.pivot(index="detector", columns="loss", values="text").reindex(index=dets, columns=losses)
    bold = s.pivot(index="detector", columns="loss", values="best").reindex(index=dets, columns=losses).fillna(False)
    wide.columns = [loss_label(c) for c in wide.columns]
    bold.columns = wide.columns
    wide.insert(0, "Detector", [detector_label(d) for d in dets])
    bold.insert(0, "Detector", False)
    notes = [_legend(metric)]
    return Table(f"grid_{metric}", f"{metric_label(metric)} by detector and loss", wide.reset_index(drop=True),
                 bold.reset_index(drop=True).astype(bool), notes)


def compare_table(stats: pd.DataFrame, metric: str, dataset: str) -> Table:
    """One line per detector × loss: runs, ``metric``, change vs baseline, published number, source."""
    s = stats[(stats["dataset"] == dataset) & (stats["metric"] == metric)]
    label = metric_label(metric)
    first = ~s["detector"].duplicated()
    out = pd.DataFrame({
        "Detector": np.where(first, s["detector"].map(detector_label), ""),
        "Loss": [loss_label(l) + (f" {BASELINE_MARK}" if l == b else "") for l, b in zip(s["loss"], s["baseline_loss"])],
        "Runs": [_runs_text(r) for r in s.itertuples(index=False)],
        label: s["text"].to_numpy(),
        "Δ vs baseline": [_delta_text(r) for r in s.itertuples(index=False)],
        "Paper": [_fmt(v, metric) if v == v else "" for v in s["paper"]],
        "Paper source": [f"{src} ({var})" if isinstance(src, str) else ""
                         for src, var in zip(s["paper_source"], s["paper_variant"])],
    })
    bold = pd.DataFrame(False, index=out.index, columns=out.columns)
    bold[label] = s["best"].to_numpy()
    notes = [_legend(metric), "Δ vs baseline: our mean minus the baseline loss's mean, in points"
             + (" (negative is better for oLRP)." if lower_is_better(metric) else ".")]
    pn = _paper_note(s)
    if pn:
        notes.append(pn)
    return Table(f"compare_{metric}", f"{label}: change vs baseline and published numbers", out, bold, notes,
                 ("Detector", "Loss", "Runs", "Paper source"))


def metrics_table(stats: pd.DataFrame, dataset: str) -> Table:
    """One line per detector × loss, a column per main metric (with the published number beside)."""
    s = stats[stats["dataset"] == dataset]
    present = set(s.loc[s["n"] > 0, "metric"])
    cols = [m for m in MAIN_METRICS if m in present] or [m for m in s["metric"].unique() if m in present]
    cells = s.drop_duplicates(KEYS)
    first = ~cells["detector"].duplicated()
    out = pd.DataFrame({
        "Detector": np.where(first, cells["detector"].map(detector_label), ""),
        "Loss": [loss_label(l) + (f" {BASELINE_MARK}" if l == b else "")
                 for l, b in zip(cells["loss"], cells["baseline_loss"])],
        "n": cells["done"].to_numpy(),
    })
    bold = pd.DataFrame(False, index=out.index, columns=out.columns)
    for m in cols:
        sm = s[s["metric"] == m]
        text = [t.rsplit(" (", 1)[0] if n > 0 else t for t, n in zip(sm["text"], sm["n"])]
        out[metric_label(m)] = text
        bold[metric_label(m)] = sm["best"].to_numpy()
        if sm["paper"].notna().any():
            col = f"{metric_label(m)} (paper)"
            out[col] = [_fmt(v, m) if v == v else "" for v in sm["paper"]]
            bold[col] = False
    out["n"] = out["n"].astype(str)
    notes = [_legend(None).replace("(n = runs with a value)", "(n = finished runs)"),
             "oLRP columns: lower is better; bold marks the lowest."]
    pn = _paper_note(s[s["metric"].isin(cols)])
    if pn:
        notes.append(pn)
    return Table("metrics", "All metrics by detector and loss", out, bold, notes)


# ------------------------------------------------------------------------------------------------
# Rendering


def to_markdown(table: Table, heading: str | None = "###") -> str:
    cols = list(table.frame.columns)

    def esc(x) -> str:
        return str(x).replace("|", "\\|")

    lines = []
    if heading:
        lines += [f"{heading} {table.title}", ""]
    lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
    lines.append("|" + "|".join(":---" if c in table.left else "---:" for c in cols) + "|")
    values = table.frame.to_numpy()
    bold = table.bold.to_numpy()
    for row, marks in zip(values, bold):
        cells = [f"**{esc(v)}**" if b and str(v) else esc(v) for v, b in zip(row, marks)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"{n}" for n in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "—": "--", "Δ": r"$\Delta$", "†": r"$^\dagger$", "×": r"$\times$"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in [*_LATEX_ESCAPES, *_LATEX_SYMBOLS]))


def latex_escape(text: str) -> str:
    return _LATEX_RE.sub(lambda m: _LATEX_ESCAPES.get(m.group(0)) or _LATEX_SYMBOLS[m.group(0)], str(text))


def to_latex(table: Table) -> str:
    """A booktabs ``tabular`` (``Styler.to_latex(hrules=True)``), best cells in ``\\bfseries``; the title
    and notes as ``%`` comments above it."""
    df = table.frame.map(latex_escape)
    df.columns = [latex_escape(c) for c in df.columns]
    mask = table.bold.to_numpy()
    styler = df.style.hide(axis="index").apply(lambda _: np.where(mask, "bfseries: ;", ""), axis=None)
    align = "".join("l" if c in table.left else "r" for c in table.frame.columns)
    body = styler.to_latex(hrules=True, column_format=align)
    head = [f"% {table.title}"] + [f"% {n}" for n in table.notes]
    return "\n".join(head) + "\n" + body


# ------------------------------------------------------------------------------------------------
# Building and writing


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "x"


def check_metric(frame: pd.DataFrame, metric: str | None) -> str:
    """``metric`` or the default one; :class:`TablesError` listing the available metrics if unknown."""
    if metric is None:
        return default_metric(frame)
    available = metric_columns(frame, with_values=False)
    if available and metric not in available:
        raise TablesError(f"unknown metric {metric!r}; the runs have: {', '.join(available)}")
    if not available:
        from harness.results.frame import METRIC_ORDER

        if metric not in METRIC_ORDER:
            raise TablesError(f"unknown metric {metric!r}; valid: {', '.join(METRIC_ORDER)}")
    return metric


@dataclass
class TableSet:
    """All tables of an experiment for one metric: per dataset, grid, compare and metrics."""

    metric: str
    stats: pd.DataFrame
    tables: dict[str, list[Table]]  # dataset → tables
    summary: str

    def markdown(self, title: str = "Results") -> str:
        parts = [f"# {title}", "", self.summary, ""]
        multi = len(self.tables) > 1
        for ds, tables in self.tables.items():
            if multi:
                parts += [f"## Dataset: {ds}", ""]
            for t in tables:
                parts.append(to_markdown(t, "###" if multi else "##"))
        return "\n".join(parts)

    def latex(self) -> str:
        out = []
        for ds, tables in self.tables.items():
            for t in tables:
                out.append(to_latex(t) if len(self.tables) == 1 else f"% dataset: {ds}\n" + to_latex(t))
        return "\n".join(out)


def _summary(frame: pd.DataFrame, stats: pd.DataFrame, n_corrupt: int) -> str:
    counts = frame["state"].value_counts()
    runs = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s, 0)) or "none"
    cells = stats.drop_duplicates(KEYS)
    valued = stats.groupby(KEYS)["n"].max()
    text = f"Runs: {runs}. Cells (detector × loss): {len(cells)}, {int((valued > 0).sum())} with values."
    if n_corrupt:
        text += f" {n_corrupt} corrupt row file(s) left out (`harness status` lists them)."
    if frame.attrs.get("superseded"):
        text += (f" {frame.attrs['superseded']} older row(s) of runs since changed in the spec left out "
                 "(a cell counts its current runs only).")
    return text


def build_tables(frame: pd.DataFrame, metric: str | None = None, n_corrupt: int = 0,
                 paper: pd.DataFrame | bool | None = None) -> TableSet:
    """Every table of ``frame`` for ``metric`` (default :func:`~harness.results.frame.default_metric`)."""
    if frame.empty:
        raise TablesError("no runs: the experiment has no result rows and no submitted runs")
    metric = check_metric(frame, metric)
    metrics = metric_columns(frame)
    if metric not in metrics:
        metrics = [metric] + metrics
    stats = cell_stats(frame, metrics, paper)
    tables = {ds: [grid_table(stats, metric, ds), compare_table(stats, metric, ds), metrics_table(stats, ds)]
              for ds in stats["dataset"].unique()}
    return TableSet(metric, stats, tables, _summary(frame, stats, n_corrupt))


def write_tables(tset: TableSet, frame: pd.DataFrame, out: str | Path, formats: Iterable[str] = FORMATS,
                 title: str = "Results") -> dict[str, Path]:
    """Write ``tset`` into folder ``out`` (atomically, file by file). Markdown: ``tables.md`` (all) and
    ``<table>.md``; LaTeX: ``<table>.tex``; CSV: ``cells.csv`` (every cell statistic, all metrics) and
    ``runs.csv`` (the tidy frame). With several datasets the per-table files get ``_<dataset>``."""
    out = Path(out)
    formats = set(formats)
    written: dict[str, Path] = {}
    multi = len(tset.tables) > 1
    for ds, tables in tset.tables.items():
        suffix = f"_{_slug(ds)}" if multi else ""
        for t in tables:
            if "md" in formats:
                written[f"{t.name}{suffix}.md"] = write_text_atomic(out / f"{t.name}{suffix}.md", to_markdown(t))
            if "latex" in formats:
                written[f"{t.name}{suffix}.tex"] = write_text_atomic(out / f"{t.name}{suffix}.tex", to_latex(t))
    if "md" in formats:
        written["tables.md"] = write_text_atomic(out / "tables.md", tset.markdown(title))
    if "csv" in formats:
        written["cells.csv"] = write_text_atomic(out / "cells.csv", tset.stats.to_csv(index=False))
        written["runs.csv"] = write_text_atomic(out / "runs.csv", frame.to_csv(index=False))
    return written


def build_all(results_dir: str | Path, metric: str | None = None, *, spec=None, out: str | Path | None = None,
              formats: Iterable[str] = FORMATS, plots: bool = True) -> dict[str, Path]:
    """Tables (every format) and plots of experiment folder ``results_dir``; what ``make tables`` runs.

    Writes ``<results_dir>/tables/`` (or ``<out>/tables``) and ``<results_dir>/plots/``; returns
    ``{"tables/<file>": path, "plots/<file>": path, ...}``. Raises :class:`TablesError` when the folder
    does not exist, has no runs, or ``metric`` is unknown."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise TablesError(f"{results_dir} is not a folder; give results/<experiment> (run `harness run SPEC` first)")
    frame, rows, corrupt = load_experiment(results_dir, spec)
    if frame.empty:
        raise TablesError(f"no result rows in {results_dir / 'runs'} and no submitted runs; "
                          "run `harness run SPEC` first")
    tset = build_tables(frame, metric, len(corrupt))
    base = Path(out) if out is not None else results_dir
    title = f"Results: {results_dir.name}"
    written = {f"tables/{k}": v for k, v in write_tables(tset, frame, base / "tables", formats, title).items()}
    if plots:
        from harness.results import cache

        digest = cache.inputs_digest(rows, tset, title)
        drawn = cache.cached(base / "plots", digest)
        if drawn is None:  # something changed: draw (matplotlib is imported only then)
            from harness.results.plots import write_plots

            drawn = write_plots(rows, tset, base / "plots", title)
            cache.remember(base / "plots", digest, drawn)
        written.update({f"plots/{k}": v for k, v in drawn.items()})
    return written
