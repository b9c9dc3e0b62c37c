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
