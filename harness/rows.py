"""Result rows: ``results/<experiment>/runs/<run_id>.json``, one per finished (or failed) run.

A row is written atomically (a temporary file in the same folder, then ``os.replace``), so a reader
sees either no row or a whole one, never half, even if the writer is killed. Reading skips and reports
a corrupt file (with a warning) instead of dropping it silently.

Row fields: ``run_id``, ``experiment``, ``detector``, ``loss``, ``seed``, ``dataset``, ``profile``,
``schedule``, ``status`` (``done`` or ``failed``), ``reason`` (why it failed), ``metrics`` (flat
name → value), ``per_class`` (each IoU type's AP per category: ``{"bbox": [{"id", "name", "AP"}]}``,
``null`` AP for a category without validation ground truth), ``curve`` (training loss per logged iteration), ``val_curve`` (with ``schedule.val_every``:
``{"epoch", "iteration", "metrics"}`` every k epochs), ``fingerprint`` (what decides the result beyond the
spec: config digest, harness code, loss modules, versions; :mod:`harness.run.fingerprint`) and
``provenance`` (git commit and dirty flag, package versions, the batch and lr beside the recipe's, wall
time, job id, host, restarts, and the ``attempt``: the token of the submission that made it).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from harness.files import write_json_atomic

ROW_STATUSES = ("done", "failed")


class CorruptRowWarning(UserWarning):
    """A row file that cannot be read; it is left out of tables and listed by ``harness status``."""


def runs_dir(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / "runs"


def row_path(experiment_dir: str | Path, run_id: str) -> Path:
    return runs_dir(experiment_dir) / f"{run_id}.json"


def write_row(experiment_dir: str | Path, row: Mapping[str, Any]) -> Path:
    if row.get("status") not in ROW_STATUSES:
        raise ValueError(f"a row's status must be one of {ROW_STATUSES}, got {row.get('status')!r}")
    return write_json_atomic(row_path(experiment_dir, row["run_id"]), dict(row))


@dataclass
class CorruptRow:
    path: Path
    reason: str


def read_rows(experiment_dir: str | Path, warn: bool = True) -> tuple[list[dict], list[CorruptRow]]:
    """All rows of an experiment, and the files that could not be read (each warned about)."""
    rows, corrupt = [], []
    folder = runs_dir(experiment_dir)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            row = json.loads(path.read_text())
            if not isinstance(row, dict) or "run_id" not in row or row.get("status") not in ROW_STATUSES:
                raise ValueError("not a result row (no run_id or status)")
            if row["run_id"] != path.stem:
                raise ValueError(f"its run_id {row['run_id']!r} does not match the file name")
        except (OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, json.JSONDecodeError) else f"invalid JSON ({exc.msg} at line {exc.lineno})"
            corrupt.append(CorruptRow(path, reason))
            if warn:
                warnings.warn(f"corrupt result row {path} left out: {reason}", CorruptRowWarning, stacklevel=2)
            continue
        rows.append(row)
    return rows, corrupt


# ------------------------------------------------------------------------------------------------
# The spec as last run: which runs are current

SPEC_RECORD = "spec.json"


def spec_record_path(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / SPEC_RECORD


def record_spec(experiment_dir: str | Path, spec) -> Path:
    """Write ``results/<experiment>/spec.json``: every run the spec asks for (the whole spec, whatever
    ``--only`` ran) with its detector, loss, seed and dataset, the spec file (absolute) and when. ``harness run``
    (and ``benchmark``) write it at each invocation that places or checks runs, so the results folder
    itself says which of its rows are current: a row whose run the spec no longer has (its spec was
    edited since) is superseded in ``harness status`` and left out of the tables, ``--spec`` or not."""
    import time

    runs = {run_id: {k: v for k, v in meta.items() if k != "experiment"} for run_id, meta in _runs_of(spec).items()}
    return write_json_atomic(spec_record_path(experiment_dir), {
        "experiment": spec.name, "spec": str(Path(spec.path).resolve()) if getattr(spec, "path", None) else None,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs})


def read_spec_record(experiment_dir: str | Path) -> dict | None:
    """The record :func:`record_spec` wrote (None when there is none; one that cannot be read is None with a
    warning naming the file: the rows' own dates then decide, as for folders from before the record)."""
    path = spec_record_path(experiment_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
            raise ValueError("no 'runs' mapping")
    except (OSError, ValueError) as exc:
        warnings.warn(f"spec record {path} cannot be read ({exc}); the latest row of each cell and seed counts "
                      f"instead (the next `harness run` rewrites it)", stacklevel=2)
        return None
    return data


def record_label(record: Mapping) -> str:
    """How a spec record is named in messages: ``the spec as last run (experiments/x.yaml, <when>)``."""
    where = ", ".join(str(x) for x in (record.get("spec"), record.get("recorded_at")) if x)
    return f"the spec as last run ({where})" if where else "the spec as last run"


def _runs_of(spec) -> dict[str, dict]:
    """Run id → ``{"experiment", "detector", "loss", "seed", "dataset"}`` of every run of ``spec``."""
    return {r.run_id: {"experiment": spec.name, "detector": r.detector, "loss": r.loss, "seed": r.seed,
                       "dataset": dict(r.dataset)} for r in spec.runs()}


def current_runs(experiment_dir: str | Path, spec=None) -> tuple[dict[str, dict] | None, str]:
    """The runs the experiment asks for now, run id → ``{"experiment", "detector", "loss", "seed",
    "dataset"}``, and where that comes from, for messages: ``spec`` (a Spec, when given), else the folder's
    spec record (:func:`record_spec`), else None ("the latest row of each cell and seed" decides)."""
    if spec is not None:
        return _runs_of(spec), f"the spec {spec.path}" if getattr(spec, "path", None) else "the spec"
    record = read_spec_record(experiment_dir)
    if record is None:
        return None, "the latest row of each cell and seed (no spec recorded in the folder: pass --spec SPEC)"
    return ({run_id: {"experiment": record.get("experiment"), **meta} for run_id, meta in record["runs"].items()},
            record_label(record))


# How each key of a dataset entry shows in its label (after the kind); any other key as ``<key> <value>``.
_DATASET_LABEL_KEYS = {"name": "", "root": "root ", "train_images": "train ", "val_images": "val ",
                       "repeat_factor": "rfs "}


def dataset_label(dataset: Mapping[str, Any] | None) -> str:
    """A dataset's identity in the tables: its whole entry (kind, then name, root, sizes, repeat-factor
    threshold and any other key that is set), so rows of different data never share a cell: ``coco``,
    ``synthetic train 8``, ``lvis root /data/lvis rfs 0.001``, ``coco_format my-parts`` (your own data: its
    name, unique in a spec, stands for its files). The kind comes first."""
    if not isinstance(dataset, dict) or not dataset.get("kind"):
        return "unknown"
    parts = [str(dataset["kind"])]
    keys = [k for k in _DATASET_LABEL_KEYS if k in dataset] + sorted(set(dataset) - set(_DATASET_LABEL_KEYS) - {"kind"})
    for key in keys:
        value = dataset[key]
        if value is None or isinstance(value, dict):  # coco_format's train / val files: its name stands for them
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(_DATASET_LABEL_KEYS.get(key, f"{key} ") + text)
    return " ".join(parts)


def cell_key(row: Mapping) -> tuple:
    """The cell a row belongs to: (dataset label, detector, loss)."""
    return dataset_label(row.get("dataset")), row.get("detector"), row.get("loss")


def current_rows(rows: list[dict], run_ids=None) -> tuple[list[dict], list[dict]]:
    """Split rows into current and superseded ones. Editing a spec (say a detector's epochs) gives its runs
    new ids, and the old runs' rows stay in the folder: they must neither count as extra seeds of a cell
    nor stand beside the edited spec's cells. ``run_ids``: the current runs (a spec's, or its record's).
    None (a folder from before the record, no spec given): of the rows of one dataset, detector, loss and
    seed, the latest finished one."""
    if run_ids is not None:
        ids = set(run_ids)
        return [r for r in rows if r["run_id"] in ids], [r for r in rows if r["run_id"] not in ids]
    latest: dict[tuple, dict] = {}
    for r in rows:
        key = (*cell_key(r), r.get("seed"))
        if key not in latest or finished_at(r) > finished_at(latest[key]):
            latest[key] = r
    keep = {id(r) for r in latest.values()}
    return [r for r in rows if id(r) in keep], [r for r in rows if id(r) not in keep]


def now_iso() -> str:
    """The time now as rows record it (``provenance.finished_at``): local time with its UTC offset,
    ``2026-12-04T21:05:09+01:00``, so rows written on nodes in other time zones order correctly."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def finished_at(row: Mapping) -> float:
    """When a row's run finished, as seconds since the epoch, to order rows: ``provenance.finished_at`` is
    ISO 8601, with its UTC offset (rows from before offsets were recorded: the local time of the machine
    that wrote them, read as this machine's); -inf when absent or unreadable."""
    text = (row.get("provenance") or {}).get("finished_at")
    try:
        return datetime.fromisoformat(str(text)).timestamp() if text else float("-inf")
    except ValueError:
        return float("-inf")
