"""Result rows → one tidy pandas DataFrame: one row per run.

Columns (in this order; a column appears only when some run has it):

- identity: ``run_id``, ``experiment``, ``detector``, ``loss``, ``seed``;
- state: ``state`` (``done`` or ``failed``: the row's status; ``unfinished``: a run of the spec
  without a row), ``status`` (the row's ``done`` / ``failed``; empty for a run without a row),
  ``reason`` (why it failed);
- parameters: ``dataset`` (a label: the whole dataset entry, :func:`dataset_label`),
  ``dataset_kind``, ``dataset_root``, ``dataset_repeat_factor`` (and any other dataset key as
  ``dataset_<key>``; your own data's files as ``dataset_train_ann``, ``dataset_train_images``,
  ``dataset_val_ann``, ``dataset_val_images``), ``num_classes`` (the classes the run was evaluated on: its row's ``per_class``),
  ``profile``, ``schedule_<key>`` for every schedule key, ``loss_modules``
  (comma-separated), ``fingerprint`` (the digest of the row's fingerprint: the config, code, loss modules
  and versions it ran with), ``metrics_absent`` (for a finished run: the metrics other rows have and
  its row lacks, comma-separated);
- metrics: one float column per metric name as the rows carry them (``bbox_AP``, ``segm_oLRP`` ...),
  fractions as evaluated (NaN where a run has no such value);
- provenance: ``git_commit``, ``git_dirty``, the batch (``processes`` × ``batch_per_process`` ×
  ``accumulate`` = ``effective_batch``, ``lr`` and its ``lr_rule``, the recipe's ``recipe_processes``,
  ``recipe_batch_per_process``, ``recipe_batch``, ``recipe_lr``: :mod:`harness.experiments.batch`),
  ``off_recipe`` (the run trains another total batch or images a process than its recipe; for rows
  written before images a process were recorded: another total batch), ``wall_time_s``, ``job_id``,
  ``host``, ``restarts``, ``finished_at``, any other scalar provenance key, and ``version_<package>`` for
  each package version.

Runs of the spec that have no row yet are rows of the frame too (``unfinished``, no metrics): tables
show them, never drop them; rows of runs the spec no longer has (it was edited since) are superseded and
left out. The spec is ``--spec`` when given, else the folder's record of the spec as last run
(``spec.json``). Results read the rows and the spec only, never the launch state: whether
an unfinished run is running, queued or lost is ``harness status``'s business. The training curves
stay in the result rows (see :mod:`harness.results.plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from harness.detectors.grid import DETECTORS as GRID_DETECTORS, LOSS_TITLES
from harness.rows import (CorruptRow, cell_key, current_rows, current_runs, dataset_label,  # noqa: F401 (re-exported)
                          finished_at, read_rows)

# Detector and loss facts (titles, baseline losses, metric families) live in the grid; tables read them
# from there. The baseline loss of a detector is the one it is published with ("change vs baseline").
DETECTOR_TITLES = {name: d.title for name, d in GRID_DETECTORS.items()}
BASELINE_LOSSES = {name: d.baseline_loss for name, d in GRID_DETECTORS.items()}
METRIC_FAMILIES = {name: d.metric_families for name, d in GRID_DETECTORS.items()}
# A run's state in the tables, from the rows alone: its row's status, or ``unfinished`` for a run of the
# spec without a row (``harness status`` tells whether it runs, waits or was lost); ``missing`` counts
# cells no run belongs to.
STATES = ("done", "failed", "unfinished", "missing")
_METRIC_SUFFIXES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf",
                    "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")
METRIC_ORDER = tuple(f"{t}_{s}" for t in ("bbox", "segm") for s in _METRIC_SUFFIXES)
# The main metrics, in this order: the columns of the tables' ``metrics`` table and the seeds plots.
MAIN_METRICS = ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "bbox_APr", "bbox_APc",
                "bbox_APf", "segm_AP", "segm_APr", "segm_APc", "segm_APf", "bbox_oLRP", "segm_oLRP")
PROVENANCE = ("git_commit", "git_dirty", "processes", "batch_per_process", "accumulate", "effective_batch", "lr",
              "lr_rule", "recipe_processes", "recipe_batch_per_process", "recipe_batch", "recipe_lr", "off_recipe",
              "wall_time_s", "job_id", "host", "hardware", "restarts", "finished_at")
IDENTITY = ("run_id", "experiment", "detector", "loss", "seed")


# ------------------------------------------------------------------------------------------------
# Names and metric properties


def detector_label(name: str) -> str:
    return DETECTOR_TITLES.get(name, name)


def loss_label(name: str) -> str:
    return LOSS_TITLES.get(name, name)


def metric_family(metric: str) -> str | None:
    """``bbox`` or ``segm`` for an evaluation metric, else None."""
    head, _, _ = metric.partition("_")
    return head if head in ("bbox", "segm") else None


def is_fraction(metric: str) -> bool:
    """AP and oLRP values: fractions in [0, 1], shown ×100 like the papers."""
    fam = metric_family(metric)
    return fam is not None and metric[len(fam) + 1:].startswith(("AP", "oLRP"))


def lower_is_better(metric: str) -> bool:
    """oLRP (and its components) is an error: lower is better. Every other metric: higher."""
    return "LRP" in metric


def metric_label(metric: str) -> str:
    """``bbox_AP`` → ``AP``, ``segm_APr`` → ``mask APr``, ``bbox_oLRP`` → ``oLRP``; others as-is."""
    fam = metric_family(metric)
    if fam is None:
        return metric
    rest = metric[len(fam) + 1:]
    return f"mask {rest}" if fam == "segm" else rest


def order_names(names: Iterable[str], known: Mapping[str, str]) -> list[str]:
    """Known names in their canonical order, then the others alphabetically."""
    names = {n for n in (names.unique() if isinstance(names, pd.Series) else names) if isinstance(n, str)}
    return [n for n in known if n in names] + sorted(names - set(known))


def order_metrics(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))


# ------------------------------------------------------------------------------------------------
# Rows → frame


def _flatten(row: Mapping[str, Any]) -> dict:
    # Rows are parsed JSON: plain dicts and lists (``isinstance(x, dict)`` is much faster than an ABC check).
    out: dict[str, Any] = {k: row.get(k) for k in IDENTITY}
    out["state"] = row.get("status")
    out["status"] = row.get("status")
    out["reason"] = row.get("reason")
    ds = row.get("dataset")
    out["dataset"] = dataset_label(ds)
    if isinstance(ds, dict):
        out["dataset_kind"] = ds.get("kind")
        out["dataset_root"] = ds.get("root")
        out["dataset_repeat_factor"] = ds.get("repeat_factor")
        for k, v in ds.items():
            if isinstance(v, dict):  # your own data's train / val files: a column each, not a Python repr in runs.csv
                for sub, w in v.items():
                    out[f"dataset_{k}_{sub}"] = w
            elif k not in ("kind", "root", "repeat_factor"):
                out[f"dataset_{k}"] = v
    per_class = row.get("per_class")
    if isinstance(per_class, dict) and per_class and isinstance(next(iter(per_class.values())), list):
        out["num_classes"] = len(next(iter(per_class.values())))  # the classes evaluated (= trained: the checks)
    fp = row.get("fingerprint")
    out["fingerprint"] = fp.get("digest") if isinstance(fp, dict) else None
    out["profile"] = row.get("profile")
    sched = row.get("schedule")
    if isinstance(sched, dict):
        for k, v in sched.items():
            out[f"schedule_{k}"] = v
    mods = row.get("loss_modules")
    out["loss_modules"] = ",".join(map(str, mods)) if isinstance(mods, list) else mods
    metrics = row.get("metrics")
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            out[k if k not in out else f"metric_{k}"] = v  # made float column-wise in _tidy
    prov = row.get("provenance")
    if isinstance(prov, dict):
        for k, v in prov.items():
            if type(v) is dict:
                if k == "versions":
                    for pkg, ver in v.items():
                        out[f"version_{pkg}"] = ver
            elif type(v) is not list:
                out[k if k not in out else f"provenance_{k}"] = v
        out["off_recipe"] = off_recipe(prov)
    return out


NOT_RECORDED = "not recorded"  # the hardware of a row written before rows named it


def hardware_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many of ``frame``'s finished runs each hardware computed (their rows' ``hardware``,
    :mod:`harness.run.hardware`; :data:`NOT_RECORDED` for rows that do not name it), by name."""
    done = frame.loc[frame["state"] == "done"] if "state" in frame.columns else frame.iloc[0:0]
    if done.empty:
        return {}
    names = done["hardware"] if "hardware" in done.columns else pd.Series([None] * len(done), index=done.index)
    return dict(names.fillna(NOT_RECORDED).value_counts().sort_index().items())


def hardware_said(counts: Mapping[str, int]) -> str:
    """``name (n runs); ...`` for :func:`hardware_counts`."""
    return "; ".join(f"{name} ({n} run{'s' if n != 1 else ''})" for name, n in counts.items())


def off_recipe(provenance: Mapping[str, Any]) -> bool | None:
    """Whether a row's run trained another total batch or images a process than its recipe (its
    ``batch_differs``; rows written before it was recorded: their total batch against the recipe's;
    None when the row does not say)."""
    if "batch_differs" in provenance:
        return bool(provenance["batch_differs"])
    total, recipe = provenance.get("effective_batch"), provenance.get("recipe_batch")
    return None if not total or not recipe else total != recipe


def rows_frame(rows: Iterable[Mapping[str, Any]], others: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """The tidy frame of result ``rows`` (each run's state: its row's status). ``others``: runs without
    a row, as mappings with ``run_id``, ``detector``, ``loss``, ``seed``, ``state`` and optionally
    ``reason``, ``dataset`` (a mapping), ``experiment``.
    """
    rows = list(rows)
    records = [_flatten(r) for r in rows]
    # Metrics a finished run's row lacks while other rows have them (not a None value: no key at all)
    every = {k for r in rows if r.get("status") == "done" and isinstance(r.get("metrics"), dict) for k in r["metrics"]}
    for r, rec in zip(rows, records):
        if r.get("status") == "done":
            have = r["metrics"] if isinstance(r.get("metrics"), dict) else {}
            rec["metrics_absent"] = ",".join(sorted(every - set(have)))
    for o in others:
        records.append({
            "run_id": o.get("run_id"), "experiment": o.get("experiment"), "detector": o.get("detector"),
            "loss": o.get("loss"), "seed": o.get("seed"), "state": o.get("state") or "unfinished", "status": None,
            "reason": o.get("reason") or None, "dataset": dataset_label(o.get("dataset")),
        })
    if not records:
        return pd.DataFrame(columns=list(IDENTITY) + ["state", "status", "reason", "dataset"])
    df = pd.DataFrame.from_records(records)
    return _tidy(df)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    # One known dataset and runs whose dataset is unknown (no row, no manifest entry): they share it.
    known = [d for d in df["dataset"].unique() if d != "unknown"]
    if len(known) == 1:
        df["dataset"] = df["dataset"].where(df["dataset"] != "unknown", known[0])
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    metric_cols = order_metrics(c for c in df.columns if metric_family(c) or c.startswith("metric_"))
    for c in metric_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")  # None, bools, text → NaN
    first = list(IDENTITY) + ["state", "status", "reason", "dataset"]
    params = [c for c in df.columns if c.startswith("dataset_")] + ["num_classes"] + [
        c for c in df.columns if c.startswith("schedule_")] + ["profile", "loss_modules",
                                                                                   "fingerprint", "metrics_absent"]
    prov = [c for c in PROVENANCE if c in df.columns]
    versions = sorted(c for c in df.columns if c.startswith("version_"))
    order = first + [c for c in params if c in df.columns] + metric_cols + prov
    rest = [c for c in df.columns if c not in order and c not in versions]
    df = df[order + rest + versions]
    det_rank = {d: i for i, d in enumerate(order_names(df["detector"].dropna(), DETECTOR_TITLES))}
    loss_rank = {d: i for i, d in enumerate(order_names(df["loss"].dropna(), LOSS_TITLES))}
    df = df.assign(_d=df["detector"].map(det_rank), _l=df["loss"].map(loss_rank))
    df = df.sort_values(["dataset", "_d", "_l", "seed", "run_id"], kind="stable", na_position="last")
    return df.drop(columns=["_d", "_l"]).reset_index(drop=True)


def metric_columns(frame: pd.DataFrame, with_values: bool = True) -> list[str]:
    """The metrics some run of ``frame`` has a value for (``with_values=False``: also those every run
    reports as undefined), in the canonical order."""
    cols = [c for c in frame.columns if metric_family(c) or c.startswith("metric_")]
    if with_values:
        cols = [c for c in cols if frame[c].notna().any()]
    return order_metrics(cols)


def default_metric(frame: pd.DataFrame) -> str:
    """``bbox_AP``; ``segm_AP`` when no run has a box AP (mask-only detectors); else the first metric."""
    have = metric_columns(frame)
    for m in ("bbox_AP", "segm_AP"):
        if m in have:
            return m
    return have[0] if have else "bbox_AP"


# ------------------------------------------------------------------------------------------------
# An experiment folder → frame


def load_frame(results_dir: str | Path, spec=None) -> tuple[pd.DataFrame, list[CorruptRow]]:
    """The frame of experiment folder ``results/<experiment>``: its rows plus every run of ``spec`` (a
    :class:`~harness.experiments.spec.Spec`) without a row. Also returns the corrupt row files (left
    out, to be reported)."""
    frame, _, corrupt = load_experiment(results_dir, spec)
    return frame, corrupt


def newest_fingerprint(rows: list[dict], stale: Mapping[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """Split rows into those a cell keeps and those it leaves out: a cell keeps the finished rows of its
    newest fingerprint (that of its latest finished row: the config, code, loss modules and versions
    its last run had) and its failed rows; finished rows of other fingerprints (or without one) are left
    out, so a cell never averages runs of different code silently. ``stale`` (run id → what changed, when
    known): a cell with rows the current code would make keeps their fingerprint, even when a row of other
    code (a teammate's older checkout) finished later."""
    stale = stale or {}

    def rank(r: Mapping) -> tuple:  # the current code's rows first, then the latest finished
        return r["run_id"] not in stale, finished_at(r)

    newest: dict[tuple, dict] = {}
    for r in rows:
        key = cell_key(r)
        if r.get("status") == "done" and (key not in newest or rank(r) > rank(newest[key])):
            newest[key] = r

    def digest(r: Mapping):
        fp = r.get("fingerprint")
        return fp.get("digest") if isinstance(fp, dict) else None

    keep = [r for r in rows if r.get("status") != "done" or digest(r) == digest(newest[cell_key(r)])]
    kept = {id(r) for r in keep}
    return keep, [r for r in rows if id(r) not in kept]


def load_experiment(results_dir: str | Path, spec=None, all_fingerprints: bool = False,
                    stale: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, list[dict], list[CorruptRow]]:
    """:func:`load_frame`, also returning the (current) result rows themselves (for their curves).
    Superseded rows (:func:`current_rows`) are left out; their number is ``frame.attrs["superseded"]``.
    So are a cell's finished rows of older fingerprints (:func:`newest_fingerprint`): their number is
    ``frame.attrs["other_fingerprints"]``, per cell ``frame.attrs["left_out"]``; ``all_fingerprints``
    keeps them (the tables then mark cells that mix fingerprints). Reads the rows and which runs are
    current: ``spec`` (a :class:`~harness.experiments.spec.Spec`) when given, else the folder's record of
    the spec as last run (``spec.json``, :func:`harness.rows.record_spec`); their runs without a row
    appear as ``unfinished``. ``frame.attrs["current_from"]`` says which decided.
    ``frame.attrs["experiments"]``: the experiment names every row (superseded or not) records.
    ``stale``: run id → what changed, for the done rows the current code would build otherwise (the
    commands ask :func:`harness.launch.plan.stale_runs`; results never build configs): a ``stale`` column
    and ``frame.attrs["stale"]``, the number of kept rows that are stale (None: not asked)."""
    results_dir = Path(results_dir)
    rows, corrupt = read_rows(results_dir, warn=False)
    experiments = sorted({str(r["experiment"]) for r in rows if r.get("experiment")})
    wanted, source = current_runs(results_dir, spec)
    rows, superseded = current_rows(rows, wanted)
    have = {r["run_id"] for r in rows}  # a run whose row a cell leaves out (another fingerprint) is not unfinished
    left_out: list[dict] = []
    if not all_fingerprints:
        rows, left_out = newest_fingerprint(rows, stale)
    others = [{"run_id": run_id, **meta, "state": "unfinished"} for run_id, meta in (wanted or {}).items()
              if run_id not in have]
    frame = rows_frame(rows, others)
    frame.attrs["superseded"] = len(superseded)
    frame.attrs["current_from"] = source  # which runs are current: the spec, its record, or the rows' dates
    frame.attrs["current_guessed"] = wanted is None
    frame.attrs["other_fingerprints"] = len(left_out)
    counts: dict[tuple, int] = {}
    for r in left_out:
        counts[cell_key(r)] = counts.get(cell_key(r), 0) + 1
    frame.attrs["left_out"] = counts
    frame.attrs["all_fingerprints"] = all_fingerprints
    frame.attrs["experiments"] = experiments
    frame.attrs["stale"] = None
    if stale is not None and not frame.empty:
        frame["stale"] = frame["run_id"].map(lambda run_id: stale.get(run_id))
        frame.attrs["stale"] = int(frame["stale"].notna().sum())
    return frame, rows, corrupt
