"""Skip redrawing plots whose inputs have not changed (a cached ``make benchmark`` rerun).

The digest covers everything a plot is drawn from: the result rows, the table statistics, the metric,
the title, and the source of :mod:`harness.results.plots` (a change in the drawing code redraws). It is
kept with the list of files it produced in ``<plots>/.inputs.json``; the plots are reused only when the
digest matches and every listed file still exists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

STAMP = ".inputs.json"


def inputs_digest(rows: list, tset: Any, title: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(sorted(rows, key=lambda r: str(r.get("run_id"))), sort_keys=True, default=str).encode())
    h.update(tset.stats.to_json(orient="split", default_handler=str).encode())
    h.update(f"{tset.metric}\0{title}\0{sorted(tset.tables)}".encode())
    origin = importlib.util.find_spec("harness.results.plots").origin
    h.update(Path(origin).read_bytes())
    return h.hexdigest()


def cached(out: Path, digest: str) -> dict[str, Path] | None:
    """The files of a previous drawing with the same inputs, or None."""
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("digest") != digest:
        return None
    files = {name: out / name for name in stamp.get("files", [])}
    return files if files and all(p.is_file() for p in files.values()) else None


def remember(out: Path, digest: str, files: dict[str, Path]) -> None:
    from harness.files import write_json_atomic

    write_json_atomic(out / STAMP, {"digest": digest, "files": sorted(files)})
