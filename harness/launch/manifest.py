"""``results/<experiment>/manifest.json``: what was submitted, where and when (the launch's own record).

One module reads and writes it. Written by dispatch at each submission, read by ``harness status`` (to
know which runs were submitted to which executor, and their SLURM job ids). Results never read it: the
tables read rows only. A manifest that cannot be read counts as empty, with a warning naming the file
(the next submission writes a whole new one, atomically).

Format: ``{"experiment", "spec", "submissions": [{"at", "executor", "runs"}], "runs": {run_id: {"detector",
"loss", "seed", "dataset", "executor", "job_id", "submitted_at"}}}``.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Mapping

from harness.files import write_json_atomic

FILE = "manifest.json"


def manifest_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / FILE


def read_manifest(results_dir: str | Path) -> dict:
    """The manifest of an experiment folder (empty when there is none, or it cannot be read)."""
    path = manifest_path(results_dir)
    empty = {"runs": {}, "submissions": []}
    if not path.exists():
        return empty
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("runs", {}), dict):
            raise ValueError("not a manifest (no 'runs' mapping)")
    except (OSError, ValueError) as exc:
        warnings.warn(f"manifest {path} cannot be read ({exc}); treated as empty", stacklevel=2)
        return empty
    data.setdefault("runs", {})
    data.setdefault("submissions", [])
    return data


def record_submission(results_dir: str | Path, spec, executor: str, jobs: Mapping[str, str | None]) -> Path:
    """Add a submission of ``jobs`` (run id → job id, None where the executor has none) of ``spec``."""
    manifest = read_manifest(results_dir)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    manifest.update(experiment=spec.name, spec=str(spec.path) if spec.path else None)
    manifest["submissions"].append({"at": now, "executor": executor, "runs": len(jobs)})
    by_id = {r.run_id: r for r in spec.runs()}
    for run_id, job_id in jobs.items():
        r = by_id[run_id]
        manifest["runs"][run_id] = {"detector": r.detector, "loss": r.loss, "seed": r.seed, "dataset": dict(r.dataset),
                                    "executor": executor, "job_id": job_id, "submitted_at": now}
    return write_json_atomic(manifest_path(results_dir), manifest)
