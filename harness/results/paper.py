"""Published numbers to show beside ours: ``experiments/paper_results.csv``.

A machine-readable, sourced copy of ``../shared/reference/paper-results.md``. One row per published
number; the matching key is ``(dataset, detector, loss, metric)``:

- ``dataset``: ``coco`` (val2017) or ``lvis`` (v1 val);
- ``detector``, ``loss``: the harness's names (``faster_rcnn``, ``rs`` ...);
- ``metric``: the harness's metric name (``bbox_AP``, ``segm_AP``, ``bbox_oLRP``, ``segm_oLRP``; also
  ``train_s_per_iter`` for the published training times);
- ``value`` as published, in ``unit`` (``percent`` for AP and oLRP, ``s/iter`` for times);
- ``variant``, ``backbone``, ``schedule``, ``notes``: what the number was measured with;
- ``primary``: 1 for the number shown when a key has several (e.g. Faster R-CNN CE with SmoothL1 vs GIoU
  box loss; a re-run beside the original); exactly one per key;
- ``beside``: 1 when the grid's paper cell of that key runs the recipe the number was measured with (the
  number stands beside the cell); 0 when it does not (e.g. the aLRP release's 100-epoch, 512-pixel
  Faster R-CNN rows, SOLOv2 R-101): shown apart, labelled
  with its recipe (``schedule``, ``notes``). A file without the column reads as all 1;
- ``source``: where the number comes from (a key of :data:`SOURCES`), never empty.

:func:`load_paper` reads and validates it; :func:`paper_for_tables` returns the primary numbers that stand
beside the cells, in the tables' scale (points, ×100 of the fractions the runs report);
:func:`paper_apart` the numbers of other recipes, each with a ``paper_recipe`` label.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).resolve().parents[2] / "experiments" / "paper_results.csv"
COLUMNS = ("dataset", "detector", "loss", "metric", "value", "unit", "variant", "backbone", "schedule", "primary",
           "source", "notes", "beside")
KEY = ["dataset", "detector", "loss", "metric"]

SOURCES = {
    "RS release": "official Rank & Sort Loss code release (RankSortLoss), results table (Oksuz et al., ICCV 2021)",
    "aLRP release": "official aLRP Loss code release (aLRPLoss), results table (Oksuz et al., NeurIPS 2020)",
    "Bucketed release": "Bucketed Ranking Losses code release (ECCV 2024), results table of their own re-runs",
    "RankSortLoss#13": "maintainer's answer in the RankSortLoss issue #13, quoting the paper",
}

# Which published benchmark a run's dataset kind is compared with. The synthetic kinds are compared
# with the benchmark they imitate: their numbers differ in scale, not in meaning (the tables say so).
DATASET_FOR_KIND = {"coco": "coco", "synthetic": "coco", "lvis": "lvis", "synthetic_lvis": "lvis"}


class PaperError(ValueError):
    """The paper CSV does not validate (message names the row and the problem)."""


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"primary": "int64", "beside": "int64", "value": "float64"}, keep_default_na=False,
                     na_values={"value": [""]})
    if "beside" not in df.columns:
        df["beside"] = 1
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PaperError(f"{path}: missing columns {', '.join(missing)}")
    for i, r in enumerate(df.itertuples(index=False), start=2):  # line 1 is the header
        if not r.source:
            raise PaperError(f"{path}:{i}: a number without a source")
        if r.source not in SOURCES:
            raise PaperError(f"{path}:{i}: unknown source {r.source!r}; known: {', '.join(SOURCES)}")
        if pd.isna(r.value):
            raise PaperError(f"{path}:{i}: no value")
        if r.dataset not in ("coco", "lvis"):
            raise PaperError(f"{path}:{i}: dataset must be coco or lvis, got {r.dataset!r}")
        if r.beside not in (0, 1):
            raise PaperError(f"{path}:{i}: beside must be 1 (the cell runs this recipe) or 0, got {r.beside!r}")
    primaries = df[df["primary"] == 1].groupby(KEY).size()
    keys = df.groupby(KEY).size()
    bad = keys.index.difference(primaries[primaries == 1].index)
    if len(bad):
        raise PaperError(f"{path}: these keys need exactly one primary row: {list(bad)}")
    return df


def load_paper(path: str | Path | None = None) -> pd.DataFrame:
    """All published numbers (columns :data:`COLUMNS`), validated; cached until the file changes."""
    path = Path(path or PAPER_CSV)
    if not path.is_file():
        raise PaperError(f"{path} does not exist (the published numbers; see harness/results/paper.py)")
    return _load(str(path), path.stat().st_mtime).copy()


def paper_for_tables(path: str | Path | None = None) -> pd.DataFrame:
    """The primary numbers that stand beside the cells (``beside`` 1: the cell runs their recipe), one per
    key, with ``paper`` in the tables' scale: AP and oLRP in points (as published), other units as they
    are. Columns: KEY + ``paper``, ``paper_source``, ``paper_variant``, ``paper_notes``."""
    df = load_paper(path)
    df = df[df["beside"] == 1]
    first = df.sort_values("primary", ascending=False).drop_duplicates(KEY).index  # the primary, else the first
    df = df.loc[sorted(first)]
    return pd.DataFrame({
        "dataset": df["dataset"], "detector": df["detector"], "loss": df["loss"], "metric": df["metric"],
        "paper": df["value"], "paper_source": df["source"],
        "paper_variant": [", ".join(x for x in parts if x) for parts in zip(df["variant"], df["backbone"], df["schedule"])],
        "paper_notes": df["notes"],
    }).reset_index(drop=True)


def paper_apart(path: str | Path | None = None) -> pd.DataFrame:
    """The published numbers of recipes the grid's cells do not run (``beside`` 0), to be shown apart from
    the cells: KEY + ``paper``, ``paper_source``, ``paper_recipe`` (variant, backbone and schedule: what
    it was measured with), ``paper_notes``, ``primary``."""
    df = load_paper(path)
    df = df[df["beside"] == 0]
    return pd.DataFrame({
        "dataset": df["dataset"], "detector": df["detector"], "loss": df["loss"], "metric": df["metric"],
        "paper": df["value"], "paper_source": df["source"],
        "paper_recipe": [", ".join(x for x in parts if x) for parts in zip(df["variant"], df["backbone"], df["schedule"])],
        "paper_notes": df["notes"], "primary": df["primary"],
    }).reset_index(drop=True)
