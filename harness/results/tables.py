"""Paper-style tables from an experiment's result rows: Markdown, LaTeX (booktabs) and CSV.

Everything is computed from the tidy frame (:mod:`harness.results.frame`) by one ``groupby`` per
quantity; the cost grows with the number of cells (detector × loss × metric), not of runs.

:func:`cell_stats` gives one line per (dataset, detector, loss, metric) *cell*: the number of runs with
a value ``n``, ``mean`` and ``std`` over seeds (sample std, ddof 1; in points, i.e. ×100, for AP and
oLRP), the count of runs in each state, the seed-noise test of the detector's best loss (``top``,
``rival``, ``test_*``, ``best``: see below), the ``delta`` to the detector's baseline loss with its 95 %
interval, the published number beside it (``paper``, ``paper_source``) and the ``text`` shown in the
tables. Three tables are built from it:

- ``grid_<metric>``: detectors × losses for one metric (``mean ± std (n)``) and, per detector, the
  outcome of the test for its best loss;
- ``compare_<metric>``: one line per detector × loss: runs, the metric, change vs baseline with its 95 %
  interval, the published number and its source;
- ``metrics``: one line per detector × loss, a column per metric (AP, AP50, AP75, APs/m/l, APr/c/f,
  mask AP, oLRP), each published number in a column beside ours.

Cells without a value say why: ``failed``, ``unfinished`` (in the spec, no row yet), ``—``
(missing: no run), ``n/a`` (the detector does not predict that metric, e.g. mask AP of ATSS), ``n/d``
(not defined: runs finished but the metric had nothing to average, e.g. APl without large objects).
:func:`build_all` writes everything (and the plots) for an experiment folder.

**The bold rule** (seed noise). Within a detector (and dataset, metric) the *top* loss is the one with
the best mean. It is bold (``best``) only when a paired t-test over seeds separates it from *every*
other loss with a value: for each other loss, over the seeds both have, the 95 % confidence interval of
the mean difference (top − other, t with k − 1 degrees of freedom for k common seeds) lies entirely on
the top's side of zero. Requiring every comparison at 95 % is an intersection-union test: the claim
"this loss is the best" is wrong at most 5 % of the time, without a multiplicity correction. The
comparison that decides (an untestable one, with fewer than two common seeds, else the one with the
largest one-sided p) is the top cell's ``rival``; every other cell's ``test_*`` is its comparison with
the top. Runs with the same seed share the data order (and, where the architectures agree, the
initial weights), which is why the differences are paired by seed. With fewer than two seeds nothing
is bold, and the tables say why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from harness.files import write_text_atomic
from harness.results.frame import (
    BASELINE_LOSSES,
    METRIC_FAMILIES,
    DETECTOR_TITLES,
    LOSS_TITLES,
    MAIN_METRICS,
    NOT_RECORDED,
    STATES,
    default_metric,
    detector_label,
    hardware_counts,
    hardware_said,
    is_fraction,
    load_experiment,
    loss_label,
    lower_is_better,
    metric_columns,
    metric_family,
    metric_label,
    order_names,
)
from harness.results.stats import CONFIDENCE, TEST_NAME, paired_interval, seed_values

KEYS = ["dataset", "detector", "loss"]
NOT_APPLICABLE = "n/a"
NOT_DEFINED = "n/d"
MISSING = "—"
BASELINE_MARK = "†"
OFF_RECIPE_MARK = "‡"
MIXED_MARK = "§"  # a cell whose values come from rows of several fingerprints (--all-fingerprints)
LACKING = "lack it"  # "(2; 1 lack it)": finished runs whose row has no such metric
BEST_COLUMN = "Best (95 %)"
FORMATS = ("md", "latex", "csv")
STAT_COLUMNS = ["dataset", "detector", "loss", "metric", "n", "mean", "std", "scale", "runs", *STATES, "lacking",
                "left_out", "fingerprints", "applicable",
                "lower_is_better", "top", "best", "test", "rival", "test_n", "test_diff", "test_low", "test_high",
                "test_p", "baseline_loss", "baseline_mean", "delta", "delta_n", "delta_low", "delta_high", "delta_p",
                "paper", "paper_source", "paper_variant", "off_recipe", "text", "delta_text"]
# ``test`` values: the outcome of the seed-noise test (see the module docstring).
SEPARATED, NOT_SEPARATED, FEW_SEEDS, ALONE = "separated", "not separated", "too few seeds", "alone"


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
    left_out = frame.attrs.get("left_out") or {}  # per cell: finished rows of older fingerprints
    for m in metrics:
        if m not in frame.columns:
            frame = frame.assign(**{m: np.nan})
    datasets = sorted(frame["dataset"].unique())
    index_tuples = []
    for ds in datasets:
        sub = frame[frame["dataset"] == ds]
        dets = order_names(sub["detector"].dropna(), DETECTOR_TITLES)
        losses = order_names(sub["loss"].dropna(), LOSS_TITLES)
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

    stats = stats.merge(_off_recipe(done, cells), on=KEYS, how="left")
    stats["applicable"] = _applicable(stats, done)
    stats["lacking"] = _lacking(stats, done)
    stats["left_out"] = [int(left_out.get(k, 0))
                         for k in zip(stats["dataset"], stats["detector"], stats["loss"])]
    if "fingerprint" in done.columns and len(done):
        digests = done["fingerprint"].map(lambda v: v if isinstance(v, str) else "")  # "": no fingerprint
        kinds = digests.groupby([done[k] for k in KEYS]).nunique()
        stats["fingerprints"] = [int(kinds.get(k, 0)) for k in zip(stats["dataset"], stats["detector"], stats["loss"])]
    else:
        stats["fingerprints"] = 0
    stats["lower_is_better"] = stats["metric"].map(lower_is_better).astype(bool)
    stats = _seed_tests(stats, seed_values(done, metrics))
    stats = _paper(stats, _paper_frame(paper))
    stats["text"] = [_cell_text(r) for r in stats.itertuples(index=False)]
    stats["delta_text"] = [_delta_text(r) for r in stats.itertuples(index=False)]
    return stats[STAT_COLUMNS]


def _off_recipe(done: pd.DataFrame, cells: pd.MultiIndex) -> pd.DataFrame:
    """Per cell: whether some finished run trained another total batch or images a process than the recipe."""
    if "off_recipe" in done.columns and len(done):
        flag = done["off_recipe"].astype("boolean").fillna(False).astype(bool)
        off = flag.groupby([done[k] for k in KEYS], sort=False).any()
    else:
        off = pd.Series(dtype=bool)
    return off.reindex(cells, fill_value=False).astype(bool).rename("off_recipe").reset_index()


def _seed_tests(stats: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """The bold rule (module docstring) and Δ vs baseline with its paired interval, per cell.

    One pass over the (dataset, detector, metric) groups: each is a small losses × seeds matrix."""
    n_rows = len(stats)
    out = {c: np.full(n_rows, np.nan) for c in ("test_n", "test_diff", "test_low", "test_high", "test_p",
                                                  "delta", "delta_n", "delta_low", "delta_high", "delta_p")}
    top = np.zeros(n_rows, dtype=bool)
    best = np.zeros(n_rows, dtype=bool)
    test = np.full(n_rows, "", dtype=object)
    rival = np.full(n_rows, None, dtype=object)
    stats = stats.copy()
    stats["baseline_loss"] = stats["detector"].map(BASELINE_LOSSES)
    position = {key: i for i, key in enumerate(zip(stats["dataset"], stats["detector"], stats["loss"], stats["metric"]))}
    lower = {m: lower_is_better(m) for m in stats["metric"].unique()}
    if len(values):
        wide = values.pivot_table(index=["dataset", "detector", "metric", "loss"], columns="seed", values="value",
                                  aggfunc="mean", sort=False)
        for (ds, det, metric), group in wide.groupby(level=[0, 1, 2], sort=False):
            losses = list(group.index.get_level_values(3))
            mat = group.to_numpy(dtype="float64")
            sign = -1.0 if lower[metric] else 1.0
            rows = {loss: position.get((ds, det, loss, metric)) for loss in losses}
            # Δ vs baseline: this − baseline over the common seeds (in the metric's own direction).
            base = BASELINE_LOSSES.get(det)
            if base in losses:
                b = mat[losses.index(base)]
                for j, loss in enumerate(losses):
                    i = rows[loss]
                    if i is None:
                        continue
                    k, m, lo, hi, p = paired_interval(mat[j], b)
                    out["delta_n"][i], out["delta"][i] = k, m
                    out["delta_low"][i], out["delta_high"][i], out["delta_p"][i] = lo, hi, p
            # The top loss, and whether every other loss is separated from it.
            means = np.nanmean(mat, axis=1) * sign
            t_idx = int(np.argmax(means))
            it = rows[losses[t_idx]]
            if it is None:
                continue
            top[it] = True
            if len(losses) == 1:
                test[it] = ALONE
                continue
            decisive = None  # (untestable?, one-sided p, j, result)
            for j, loss in enumerate(losses):
                if j == t_idx:
                    continue
                res = paired_interval(mat[t_idx] * sign, mat[j] * sign)  # the top's side is positive
                k, m, lo, hi, p = res
                one_sided = math.nan if k < 2 else (p / 2 if m > 0 else 1 - p / 2)
                key = (k < 2, means[j] if k < 2 else one_sided)
                if decisive is None or key > decisive[0]:
                    decisive = (key, j, res)
                i = rows[loss]
                if i is not None:  # this cell against the top, in the metric's units
                    rival[i] = losses[t_idx]
                    _store(out, i, res, -sign)
                    test[i] = FEW_SEEDS if k < 2 else (SEPARATED if lo > 0 else NOT_SEPARATED)
            _, j, res = decisive
            k, m, lo, hi, p = res
            rival[it] = losses[j]
            _store(out, it, res, sign)
            test[it] = FEW_SEEDS if k < 2 else (SEPARATED if lo > 0 else NOT_SEPARATED)
            best[it] = test[it] == SEPARATED
    stats["top"], stats["best"], stats["test"], stats["rival"] = top, best, test, rival
    for c, v in out.items():
        stats[c] = v
    stats["test_n"] = stats["test_n"].fillna(0).astype("int64")
    stats["delta_n"] = stats["delta_n"].fillna(0).astype("int64")
    base = stats.loc[stats["n"] > 0, ["dataset", "detector", "loss", "metric", "mean"]].rename(
        columns={"loss": "baseline_loss", "mean": "baseline_mean"})
    stats = stats.merge(base, on=["dataset", "detector", "baseline_loss", "metric"], how="left")
    # Cells and baselines without a common seed: the difference of their means, without an interval.
    apart = stats["delta"].isna() & stats["baseline_mean"].notna() & (stats["n"] > 0)
    stats.loc[apart, "delta"] = stats.loc[apart, "mean"] - stats.loc[apart, "baseline_mean"]
    return stats


def _store(out: dict, i: int, res: tuple, factor: float) -> None:
    """Keep a paired comparison made on signed values (the top's side positive), as ``factor`` × it:
    back in the metric's units, for the top (top − rival) or another cell (this − top)."""
    k, m, lo, hi, p = res
    lo, hi = sorted((factor * lo, factor * hi)) if lo == lo else (math.nan, math.nan)
    m = factor * m
    out["test_n"][i], out["test_diff"][i], out["test_low"][i], out["test_high"][i], out["test_p"][i] = k, m, lo, hi, p


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
        elif det in METRIC_FAMILIES:
            out.append(fam in METRIC_FAMILIES[det])
        else:
            out.append((ds, det) not in det_done)
    return pd.Series(out, index=stats.index, dtype=bool)


def _lacking(stats: pd.DataFrame, done: pd.DataFrame) -> list[int]:
    """Per cell and metric: the finished runs whose row lacks the metric (no key at all) though it
    applies: their seeds are left out of the mean, and the cell says so."""
    if "metrics_absent" not in done.columns or not len(done):
        return [0] * len(stats)
    absent = done[KEYS].assign(metric=done["metrics_absent"].fillna("").str.split(",")).explode("metric")
    counts = absent[absent["metric"] != ""].groupby(KEYS + ["metric"]).size()
    return [int(counts.get(k, 0)) if ok else 0 for k, ok in
            zip(zip(stats["dataset"], stats["detector"], stats["loss"], stats["metric"]), stats["applicable"])]


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


def _cell_notes(r) -> list[str]:
    """What a cell's values leave out: runs lacking the metric, rows of older fingerprints."""
    notes = [f"{r.lacking} {LACKING}"] if r.lacking else []
    if r.left_out:
        notes.append(f"{r.left_out} older left out")
    return notes


def _cell_text(r) -> str:
    if not r.applicable:
        return NOT_APPLICABLE
    mark = (f" {MIXED_MARK}" if r.fingerprints > 1 else "") + (f" {OFF_RECIPE_MARK}" if r.off_recipe else "")
    if r.n > 0:
        text = _fmt(r.mean, r.metric)
        if r.std == r.std:
            text += f" ± {_fmt(r.std, r.metric)}"
        extra = [f"{getattr(r, s)} {s}" for s in STATES[1:] if getattr(r, s)]
        if r.done > r.n + r.lacking:
            extra.insert(0, f"{r.done - r.n - r.lacking} {NOT_DEFINED}")
        return f"{text} ({'; '.join([str(r.n)] + _cell_notes(r) + extra)}){mark}"
    others = _cell_notes(r) + [f"{getattr(r, s)} {s}" for s in STATES[1:] if getattr(r, s)]
    if r.done > r.lacking:
        return NOT_DEFINED + (f" ({'; '.join(others)})" if others else "") + mark
    if r.done > 0:  # every finished run lacks the metric
        return f"{r.lacking} {LACKING}" + (f" ({'; '.join(others[1:])})" if others[1:] else "") + mark
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


def _interval_text(m: float, lo: float, hi: float, k: int, metric: str) -> str:
    """``+4.0 [+2.1, +5.9] (3)``: a paired difference, its 95 % interval and the seeds paired; without
    an interval (one common seed) ``+4.0 (1)``."""
    if lo == lo:
        return f"{_fmt(m, metric, signed=True)} [{_fmt(lo, metric, signed=True)}, {_fmt(hi, metric, signed=True)}] ({k})"
    return f"{_fmt(m, metric, signed=True)} ({k})" if k else f"{_fmt(m, metric, signed=True)} (no common seed)"


def _delta_text(r) -> str:
    if r.n == 0 or not r.applicable:
        return ""
    if not isinstance(r.baseline_loss, str):
        return ""
    if r.loss == r.baseline_loss:
        return "baseline"
    if r.delta != r.delta:
        return "no baseline"
    return _interval_text(r.delta, r.delta_low, r.delta_high, r.delta_n, r.metric)


def _best_text(r) -> str:
    """The outcome of the bold rule for the detector whose top cell is ``r``."""
    name, other = loss_label(r.loss), loss_label(r.rival) if isinstance(r.rival, str) else ""
    if r.test == ALONE or not r.top:
        return ""
    diff = _interval_text(r.test_diff, r.test_low, r.test_high, r.test_n, r.metric)
    if r.test == SEPARATED:
        return f"{name} ({diff} vs {other})"
    if r.test == FEW_SEEDS:
        return f"none ({name} vs {other}: {r.test_n} common seed{'s' if r.test_n != 1 else ''})"
    return f"none ({name} − {other}: {diff})"


def _legend(metric: str | None = None) -> str:
    direction = ""
    if metric is not None:
        direction = " (lowest: lower is better)" if lower_is_better(metric) else " (highest)"
    return (f"Values: mean ± std over seeds (n = runs with a value; one run has no std), ×100 for AP and oLRP. "
            f"{BASELINE_MARK}: the detector's baseline loss. "
            f"{MISSING}: no run; n/a: the detector does not predict this metric; n/d: not defined on this data; "
            "failed: the runs failed; unfinished: no row yet (harness status says why); "
            f"“{LACKING}”: finished runs whose row has no such metric (left out of the mean); "
            "“older left out”: finished rows of an older fingerprint (other code, config or versions; "
            f"harness table --all-fingerprints includes them); {MIXED_MARK}: the values mix rows of several fingerprints.")


def _off_recipe_notes(s: pd.DataFrame) -> list[str]:
    """The note on the off-recipe mark, where some cell has it."""
    if not s["off_recipe"].any():
        return []
    return [f"{OFF_RECIPE_MARK}: some runs of the cell trained another total batch or images a process than the "
            "cell's recipe (their rows' batch provenance says which); ranking-loss results depend on both."]


def bold_rule(metric: str | None = None) -> str:
    """The bold rule in one sentence (notes under the tables; the README quotes it)."""
    which = ("best mean (highest; lowest for oLRP)" if metric is None else
             "lowest mean" if lower_is_better(metric) else "highest mean")
    return (f"Bold: a detector's {which}, only where it beats every other loss of the detector beyond seed "
            f"noise ({TEST_NAME}: the interval of the difference excludes zero); with fewer than two seeds "
            "nothing is bold.")


def _bold_notes(s: pd.DataFrame, metric: str | None) -> list[str]:
    """The bold rule, and why nothing is bold where nothing is."""
    notes = [bold_rule(metric)]
    tops = s[s["top"] & (s["test"] != ALONE)]
    if len(tops) and not s["best"].any():
        if (s["n"] <= 1).all():
            notes.append("Nothing is bold: every cell has at most one seed, and seed noise cannot be measured "
                         "from one run (run more seeds).")
        else:
            notes.append("Nothing is bold: no detector's best loss is separated from its other losses beyond "
                         "seed noise.")
    return notes


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
    tops = {r.detector: _best_text(r) for r in s[s["top"]].itertuples(index=False)}
    wide[BEST_COLUMN] = [tops.get(d, "") for d in dets]
    bold[BEST_COLUMN] = False
    notes = [_legend(metric), *_bold_notes(s, metric), *_off_recipe_notes(s),
             f"{BEST_COLUMN}: the bold loss and its closest comparison (difference [95 % interval] (seeds paired)), "
             "or none and the comparison that is not separated."]
    return Table(f"grid_{metric}", f"{metric_label(metric)} by detector and loss", wide.reset_index(drop=True),
                 bold.reset_index(drop=True).astype(bool), notes, ("Detector", BEST_COLUMN))


def _apart_note(stats: pd.DataFrame, metric: str, dataset: str, apart: pd.DataFrame | None) -> str | None:
    """The published numbers of recipes the cells do not run (:func:`harness.results.paper.paper_apart`):
    named under the table with their recipe, never beside a cell."""
    if apart is None or apart.empty:
        return None
    from harness.results.paper import DATASET_FOR_KIND

    cells = set(zip(stats["detector"], stats["loss"]))
    a = apart[(apart["dataset"] == DATASET_FOR_KIND.get(dataset.split(" ")[0])) & (apart["metric"] == metric)]
    items = [f"{detector_label(r.detector)} {loss_label(r.loss)} {_fmt(r.paper, metric)} ({r.paper_source}: "
             f"{r.paper_recipe})" for r in a.itertuples(index=False) if (r.detector, r.loss) in cells]
    if not items:
        return None
    return ("Published with recipes these cells do not run (so not beside them): " + "; ".join(items) + ".")


def compare_table(stats: pd.DataFrame, metric: str, dataset: str, apart: pd.DataFrame | None = None) -> Table:
    """One line per detector × loss: runs, ``metric``, change vs baseline, published number, source;
    ``apart``: published numbers of other recipes, named in a note."""
    s = stats[(stats["dataset"] == dataset) & (stats["metric"] == metric)]
    label = metric_label(metric)
    first = ~s["detector"].duplicated()
    out = pd.DataFrame({
        "Detector": np.where(first, s["detector"].map(detector_label), ""),
        "Loss": [loss_label(l) + (f" {BASELINE_MARK}" if l == b else "") for l, b in zip(s["loss"], s["baseline_loss"])],
        "Runs": [_runs_text(r) for r in s.itertuples(index=False)],
        label: s["text"].to_numpy(),
        "Δ vs baseline": s["delta_text"].to_numpy(),
        "Paper": [_fmt(v, metric) if v == v else "" for v in s["paper"]],
        "Paper source": [f"{src} ({var})" if isinstance(src, str) else ""
                         for src, var in zip(s["paper_source"], s["paper_variant"])],
    })
    bold = pd.DataFrame(False, index=out.index, columns=out.columns)
    bold[label] = s["best"].to_numpy()
    notes = [_legend(metric), *_bold_notes(s, metric), *_off_recipe_notes(s),
             "Δ vs baseline: this loss minus the baseline loss over the seeds both have (paired by seed), in points, "
             f"[its {CONFIDENCE:.0%} interval] (seeds paired); an interval that excludes 0 is a change beyond seed noise"
             + (" (negative is better for oLRP)." if lower_is_better(metric) else ".")]
    pn = _paper_note(s)
    if pn:
        notes.append(pn)
    an = _apart_note(s, metric, dataset, apart)
    if an:
        notes.append(an)
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
        text = [t.rsplit(" (", 1)[0] + (f" ({'; '.join(_cell_notes(r))})" if _cell_notes(r) else "")
                + (f" {MIXED_MARK}" if r.fingerprints > 1 else "") + (f" {OFF_RECIPE_MARK}" if r.off_recipe else "")
                if r.n > 0 else t
                for t, r in zip(sm["text"], sm.itertuples(index=False))]
        out[metric_label(m)] = text
        bold[metric_label(m)] = sm["best"].to_numpy()
        if sm["paper"].notna().any():
            col = f"{metric_label(m)} (paper)"
            out[col] = [_fmt(v, m) if v == v else "" for v in sm["paper"]]
            bold[col] = False
    out["n"] = out["n"].astype(str)
    notes = [_legend(None).replace("(n = runs with a value;", "(n = finished runs;"), *_bold_notes(s, None),
             *_off_recipe_notes(s),
             "oLRP columns: lower is better; their best is the lowest."]
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
_LATEX_SYMBOLS = {"−": "$-$", "±": r"$\pm$", "—": "--", "Δ": r"$\Delta$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S{}",
                  "×": r"$\times$", "“": "``", "”": "''"}
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
    values: pd.DataFrame | None = None  # every run's value per metric (:func:`seed_values`), for the plots
    preface: str = ""  # a line under the summary (build_all: the plots to look at first)
    named: bool = False  # a dataset is the user's own (coco_format): its name heads its section even alone
    headings: dict[str, str] = field(default_factory=dict)  # dataset → its section's heading (:func:`_headings`)

    def markdown(self, title: str = "Results") -> str:
        parts = [f"# {title}", "", self.summary, ""] + ([self.preface, ""] if self.preface else [])
        multi = len(self.tables) > 1 or self.named
        for ds, tables in self.tables.items():
            if multi:
                parts += [f"## Dataset: {self.headings.get(ds, ds)}", ""]
            for t in tables:
                parts.append(to_markdown(t, "###" if multi else "##"))
        return "\n".join(parts)

    def latex(self) -> str:
        out = []
        for ds, tables in self.tables.items():
            for t in tables:
                out.append(to_latex(t) if len(self.tables) == 1 and not self.named
                           else f"% dataset: {self.headings.get(ds, ds)}\n" + to_latex(t))
        return "\n".join(out)


def _summary(frame: pd.DataFrame, stats: pd.DataFrame, n_corrupt: int) -> str:
    counts = frame["state"].value_counts()
    runs = ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s, 0)) or "none"
    cells = stats.drop_duplicates(KEYS)
    valued = stats.groupby(KEYS)["n"].max()
    text = f"Runs: {runs}. Cells (detector × loss): {len(cells)}, {int((valued > 0).sum())} with values."
    if n_corrupt:
        text += f" {n_corrupt} corrupt row file(s) left out (`harness status` lists them)."
    if frame.attrs.get("superseded") and frame.attrs.get("current_guessed"):
        text += f" {frame.attrs['superseded']} older row(s) of a cell and seed left out (the latest counts)."
    elif frame.attrs.get("superseded"):
        text += (f" {frame.attrs['superseded']} row(s) of runs not in {frame.attrs.get('current_from', 'the spec')} "
                 "left out (superseded: the spec was edited since they ran; a cell counts its current runs only).")
    if frame.attrs.get("stale"):
        text += (f" {frame.attrs['stale']} of the rows are stale: other code, config or versions than this "
                 "checkout's made them (`harness status` says what changed; `harness run --rerun-stale` redoes "
                 "them).")
    if frame.attrs.get("current_guessed"):
        text += (" Which runs are current was taken from the rows' dates (the latest of each cell and seed): the "
                 "folder records no spec (`harness run` writes results/<experiment>/spec.json); pass --spec SPEC.")
    if frame.attrs.get("other_fingerprints"):
        kept = ("the rows of this checkout's code, config and versions where it has some, else those of its "
                "latest-finished run" if frame.attrs.get("stale") is not None else
                "the rows of its latest-finished run's code, config and versions, whichever is current: `harness "
                "status` says which rows are stale")
        text += (f" {frame.attrs['other_fingerprints']} row(s) of older fingerprints left out (a cell keeps {kept}; "
                 f"`harness table --all-fingerprints` includes them, marked {MIXED_MARK}).")
    mixed = stats.loc[stats["fingerprints"] > 1].drop_duplicates(KEYS)
    if len(mixed):
        text += f" {len(mixed)} cell(s) mix rows of several fingerprints, marked {MIXED_MARK}."
    return text + _hardware_sentence(frame)


def _hardware_sentence(frame: pd.DataFrame) -> str:
    """What computed the finished runs (:func:`~harness.results.frame.hardware_counts`), with how many each;
    nothing when no row names it (rows written before rows did)."""
    counts = hardware_counts(frame)
    if set(counts) <= {NOT_RECORDED}:
        return ""
    text = f" Computed on: {hardware_said(counts)}."
    if len(counts) > 1:
        text += (" The same code can give other last bits, hence other runs, on other hardware: seeds computed "
                 "on different machines are different samples of the same seed noise.")
    return text


def _headings(frame: pd.DataFrame) -> dict[str, str]:
    """Each dataset's section heading: its label, the number of classes its finished runs were evaluated on
    (rows that differ say so) and, for your own data, the annotation files (exactly which data it is)."""
    out = {}
    for ds, part in frame.groupby("dataset", sort=False):
        extra = []
        if "num_classes" in part.columns:
            counts = sorted({int(n) for n in part["num_classes"].dropna()})
            if len(counts) == 1:
                extra.append(f"{counts[0]} classes")
            elif counts:
                extra.append(f"{' / '.join(map(str, counts))} classes: the rows differ (the files changed between runs)")
        for split in ("train", "val"):
            files = {str(v) for v in part.get(f"dataset_{split}_ann", pd.Series(dtype=object)).dropna()}
            if files:
                extra.append(f"{split} {', '.join(sorted(files))}")
        out[ds] = f"{ds} ({'; '.join(extra)})" if extra else ds
    return out


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
    apart = None
    if paper is None or paper is True:
        from harness.results.paper import paper_apart

        apart = paper_apart()
    tables = {ds: [grid_table(stats, metric, ds), compare_table(stats, metric, ds, apart), metrics_table(stats, ds)]
              for ds in stats["dataset"].unique()}
    named = "dataset_kind" in frame.columns and bool((frame["dataset_kind"] == "coco_format").any())
    return TableSet(metric, stats, tables, _summary(frame, stats, n_corrupt), seed_values(frame, metrics), named=named,
                    headings=_headings(frame))


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
        # a table file copied elsewhere still says which data it is (as tables.md's sections do)
        named = multi or tset.named
        md_head = f"Dataset: {tset.headings.get(ds, ds)}\n\n" if named else ""
        tex_head = f"% dataset: {tset.headings.get(ds, ds)}\n" if named else ""
        for t in tables:
            if "md" in formats:
                written[f"{t.name}{suffix}.md"] = write_text_atomic(out / f"{t.name}{suffix}.md", md_head + to_markdown(t))
            if "latex" in formats:
                written[f"{t.name}{suffix}.tex"] = write_text_atomic(out / f"{t.name}{suffix}.tex", tex_head + to_latex(t))
    if "md" in formats:
        written["tables.md"] = write_text_atomic(out / "tables.md", tset.markdown(title))
    if "csv" in formats:
        written["cells.csv"] = write_text_atomic(out / "cells.csv", tset.stats.to_csv(index=False))
        written["runs.csv"] = write_text_atomic(out / "runs.csv", frame.to_csv(index=False))
    return written


def build_all(results_dir: str | Path, metric: str | None = None, *, spec=None, out: str | Path | None = None,
              formats: Iterable[str] = FORMATS, plots: bool = True, all_fingerprints: bool = False,
              stale: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Tables (every format) and plots of experiment folder ``results_dir``; what ``make tables`` runs.

    Writes ``<results_dir>/tables/`` (or ``<out>/tables``) and ``<results_dir>/plots/``; returns
    ``{"tables/<file>": path, "plots/<file>": path, ...}``. Raises :class:`TablesError` when the folder
    does not exist, has no runs, or ``metric`` is unknown. ``all_fingerprints``: keep every cell's rows of
    older fingerprints too (:func:`~harness.results.frame.newest_fingerprint`), marked. ``stale``: run id →
    what changed, for the rows the current code would build otherwise (counted in the summary line)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise TablesError(f"{results_dir} is not a folder; give results/<experiment> (run `harness run SPEC` first)")
    frame, rows, corrupt = load_experiment(results_dir, spec, all_fingerprints, stale)
    if frame.empty:
        raise TablesError(f"no result rows in {results_dir / 'runs'} and no submitted runs; "
                          "run `harness run SPEC` first")
    tset = build_tables(frame, metric, len(corrupt))
    base = Path(out) if out is not None else results_dir
    if plots:
        tset.preface = (f"Look first at `{base / 'plots' / f'seeds_{tset.metric}.png'}` (and the other "
                        "`seeds_<metric>.png`): every seed's value of each detector's losses, their mean and "
                        "spread. The tables summarise them: mean ± std (n), bold only beyond seed noise.")
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
