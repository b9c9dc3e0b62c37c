"""The statistics behind the tables' bold rule and Δ intervals (:mod:`harness.results.tables`) and the
seeds plots (:mod:`harness.results.plots`): every run's value per metric, and the paired comparison of
two cells over the seeds they share (Student t, 95 %). See docs/tables.md, "The bold rule".
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from harness.results.frame import is_fraction

CONFIDENCE = 0.95  # of the paired intervals: the bold rule and Δ vs baseline
TEST_NAME = "paired t-test over seeds at 95 %"
KEYS = ["dataset", "detector", "loss"]


def seed_values(frame: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Every finished run's value of each metric, one line per (dataset, detector, loss, seed, metric),
    ``value`` in the table's scale (×100 for AP and oLRP); runs without a value are left out. Two runs
    of one cell with the same seed (only from rows written by hand) count as their mean."""
    metrics = [m for m in metrics if m in frame.columns]
    cols = ["dataset", "detector", "loss", "seed", "metric", "value"]
    done = frame[frame["status"] == "done"] if "status" in frame.columns else frame
    if not metrics or done.empty:
        return pd.DataFrame(columns=cols)
    long = done[KEYS + ["seed"] + metrics].melt(id_vars=KEYS + ["seed"], var_name="metric", value_name="value")
    long = long.dropna(subset=["value"])
    long["value"] = long["value"].astype("float64") * np.where(long["metric"].map(is_fraction).astype(bool), 100.0, 1.0)
    long["seed"] = long["seed"].fillna(-1)
    return long.groupby(cols[:-1], sort=False, as_index=False)["value"].mean()[cols]


def paired_interval(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> tuple:
    """Paired comparison of two cells' per-seed values (aligned by seed, NaN where a seed has none):
    ``(k, mean, low, high, p)``: the k common seeds, the mean of a − b over them, its two-sided
    ``confidence`` interval (Student t, k − 1 degrees of freedom) and the two-sided p-value of "no
    difference". Fewer than two common seeds: no interval (NaN). Differences with no spread at all
    (identical on every seed): a zero-width interval, p 0 (or 1 for a zero difference)."""
    ok = ~(np.isnan(a) | np.isnan(b))
    k = int(ok.sum())
    if k == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    d = a[ok] - b[ok]
    m = float(d.mean())
    if k < 2:
        return 1, m, math.nan, math.nan, math.nan
    se = float(d.std(ddof=1)) / math.sqrt(k)
    if not se > 1e-12 * max(1.0, abs(m)):
        return k, m, m, m, (0.0 if m != 0 else 1.0)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, k - 1)) * se
    return k, m, m - half, m + half, float(2 * t.sf(abs(m) / se, k - 1))
