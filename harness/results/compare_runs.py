"""Two result folders of one experiment, cell by cell: did a change (to the harness, a kernel, the stack)
move what the cells learn beyond seed noise?

For each detector × loss cell and metric: the seed mean before and after, and after − before paired by seed
(runs with the same seed share the data order), with the tables' paired Student t interval at 95 %
(:func:`harness.results.stats.paired_interval`). The verdict, in the metric's own direction (oLRP and its
components are errors, lower is better):

* ``equal``: every paired seed has the same value, bit for bit;
* ``worse beyond seed noise`` / ``better beyond seed noise``: the interval excludes 0;
* ``within seed noise``: it does not;
* ``too few seeds``: under two paired seeds; ``only before`` / ``only after``: one side has no finished run.

Beside the verdict, ``training`` says whether the paired runs trained alike: ``same`` when every paired
seed's logged loss curve (its row's ``curve``: the losses every few iterations) is equal bit for bit on both
sides, so that a difference in a metric comes from the evaluation alone (say, a test-time setting), and
``differs`` otherwise (empty: a side without curves).

The report also names the hardware each folder's finished runs were computed on (their rows'
``provenance.hardware``, :mod:`harness.run.hardware`): where the two differ, other last bits and so other
runs are expected even for unchanged code, and ``equal`` is not.

``harness compare-runs BEFORE AFTER`` prints the table (and writes it with ``--out``); it exits 1 when a
cell is worse beyond seed noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from harness.results.frame import (
    DETECTOR_TITLES,
    NOT_RECORDED,
    detector_label,
    hardware_counts,
    hardware_said,
    is_fraction,
    load_experiment,
    loss_label,
    lower_is_better,
    metric_columns,
    metric_label,
    order_names,
)
from harness.results.stats import CONFIDENCE, paired_interval

DEFAULT_METRICS = ("bbox_AP", "segm_AP")
EQUAL, WORSE, BETTER, NOISE, FEW = ("equal", "worse beyond seed noise", "better beyond seed noise",
                                    "within seed noise", "too few seeds")


class UnknownMetric(ValueError):
    """A metric asked for that no run of either folder has (one-line message naming the ones they have)."""


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or "state" not in frame:
        return frame
    return frame[frame["state"] == "done"]


def _by_seed(frame: pd.DataFrame, detector: str, loss: str, metric: str) -> dict[int, float]:
    if metric not in frame:
        return {}
    cell = frame[(frame["detector"] == detector) & (frame["loss"] == loss)]
    values = {int(s): float(v) for s, v in zip(cell["seed"], cell[metric]) if v == v}
    scale = 100.0 if is_fraction(metric) else 1.0
    return {s: v * scale for s, v in values.items()}


def compare(before: str | Path, after: str | Path, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per cell and metric (cells with no value on either side left out): ``detector``, ``loss``,
    ``metric``, ``n_before``, ``before`` (mean), ``n_after``, ``after``, ``k`` (paired seeds), ``delta``
    (after − before over them), ``low``, ``high`` (its interval), ``verdict``, ``training`` (``same`` /
    ``differs``: the paired seeds' loss curves, see the module docstring). ``attrs["hardware"]``: each side's
    :func:`~harness.results.frame.hardware_counts`, from the frames read here. Values in points for ×100
    metrics. ``metrics``: default AP of boxes and of masks, where the runs have them; one that no run of
    either folder has raises :class:`UnknownMetric`."""
    loaded = [load_experiment(Path(folder)) for folder in (before, after)]
    frames = [frame for frame, _, _ in loaded]
    curves = [_curves(frame, rows) for frame, rows, _ in loaded]
    if metrics is not None:
        known = set().union(*(metric_columns(frame, with_values=True) for frame in frames))
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise UnknownMetric(f"no run in either folder has metric {unknown[0]!r}; they have: {', '.join(sorted(known))}")
    b, a = (_done(frame) for frame in frames)
    wanted = list(metrics) if metrics is not None else [m for m in DEFAULT_METRICS if m in b or m in a]
    cells = set()
    for frame in (b, a):
        if not frame.empty:
            cells |= set(zip(frame["detector"], frame["loss"]))
    detectors = order_names({d for d, _ in cells}, DETECTOR_TITLES)
    out = []
    for detector in detectors:
        for loss in sorted(l for d, l in cells if d == detector):
            for metric in wanted:
                vb, va = _by_seed(b, detector, loss, metric), _by_seed(a, detector, loss, metric)
                if not vb and not va:
                    continue
                seeds = sorted(set(vb) & set(va))
                k, m, lo, hi, _ = paired_interval(np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds]))
                if not vb or not va:
                    verdict = "only after" if va else "only before"
                elif seeds and all(va[s] == vb[s] for s in seeds) and set(va) == set(vb):
                    verdict = EQUAL
                elif k < 2:
                    verdict = FEW
                else:
                    sign = -1.0 if lower_is_better(metric) else 1.0
                    low, high = sorted((sign * lo, sign * hi))
                    verdict = WORSE if high < 0 else BETTER if low > 0 else NOISE
                out.append({"detector": detector, "loss": loss, "metric": metric,
                            "training": _training(curves, detector, loss, seeds),
                            "n_before": len(vb), "before": float(np.mean(list(vb.values()))) if vb else math.nan,
                            "n_after": len(va), "after": float(np.mean(list(va.values()))) if va else math.nan,
                            "k": k, "delta": m, "low": lo, "high": hi, "verdict": verdict})
    table = pd.DataFrame(out, columns=["detector", "loss", "metric", "n_before", "before", "n_after", "after", "k",
                                       "delta", "low", "high", "verdict", "training"])
    table.attrs["hardware"] = tuple(hardware_counts(frame) for frame in frames)
    return table


def _curves(frame: pd.DataFrame, rows: list[dict]) -> dict[tuple[str, str, int], list]:
    """(detector, loss, seed) → the logged loss curve of the finished run the frame keeps for it."""
    kept = set(_done(frame)["run_id"]) if not frame.empty else set()
    return {(r["detector"], r["loss"], int(r["seed"])): r.get("curve") or []
            for r in rows if r.get("run_id") in kept}


def _training(curves: list[dict], detector: str, loss: str, seeds: list[int]) -> str:
    """``same`` when every paired seed's loss curve is equal on both sides, ``differs`` when one is not,
    empty without paired seeds or curves."""
    pairs = [(curves[0].get((detector, loss, s)), curves[1].get((detector, loss, s))) for s in seeds]
    if not pairs or any(not b or not a for b, a in pairs):
        return ""
    return "same" if all(b == a for b, a in pairs) else "differs"


def _hardware_lines(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    if not before and not after:
        return []
    lines = [f"Hardware: before {hardware_said(before) or 'no finished run'}; "
             f"after {hardware_said(after) or 'no finished run'}."]
    known = {k for k in (*before, *after) if k != NOT_RECORDED}
    if set(before) != set(after) and known:
        lines.append("The two sides were computed on different hardware: the same code can give other last bits "
                     "there, hence other runs, so read a difference as one between samples of seed noise unless it "
                     "is beyond it.")
    return lines


def _number(value: float, signed: bool = False) -> str:
    if value != value:
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def to_markdown(table: pd.DataFrame, before: str, after: str) -> str:
    """The comparison as Markdown: a summary line, the hardware of each side (the table's
    ``attrs["hardware"]``, from :func:`compare`), then one table per metric."""
    lines = [f"Before: {before}. After: {after}. Seed means (runs); Δ = after − before paired by seed, with its "
             f"{int(CONFIDENCE * 100)} % interval (Student t) and the seeds paired.", ""]
    if "hardware" in table.attrs:
        extra = _hardware_lines(*table.attrs["hardware"])
        lines += [" ".join(extra), ""] if extra else []
    counts = table["verdict"].value_counts()
    lines.append("Verdicts: " + ", ".join(f"{counts[v]} {v}" for v in counts.index) + f" ({len(table)} cell metrics).")
    moved = table[(table["verdict"] != EQUAL) & (table["training"] == "same")]
    if len(moved):
        lines.append(f"Of the others, {len(moved)} trained alike on both sides (training: same, every paired seed's "
                     "loss curve equal bit for bit): their difference is the evaluation's alone.")
    for metric, group in table.groupby("metric", sort=False):
        unit = " (points)" if is_fraction(metric) else ""
        lines += ["", f"### {metric_label(metric)}{unit}", "",
                  "| detector | loss | before | after | Δ [95 % interval] (seeds) | verdict | training |",
                  "|---|---|---:|---:|---|---|---|"]
        for r in group.itertuples():
            delta = (f"{_number(r.delta, True)} [{_number(r.low, True)}, {_number(r.high, True)}] ({r.k})"
                     if r.low == r.low else (f"{_number(r.delta, True)} ({r.k})" if r.k else ""))
            lines.append(f"| {detector_label(r.detector)} | {loss_label(r.loss)} | {_number(r.before)} "
                         f"({r.n_before}) | {_number(r.after)} ({r.n_after}) | {delta} | {r.verdict} | {r.training} |")
    return "\n".join(lines) + "\n"
