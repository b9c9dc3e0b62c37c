"""Writing files atomically: a reader sees the old file or the whole new one, never half of one.

The one writer of the project: a temporary file in the target's folder, flushed and fsynced, then
``os.replace`` over the target (atomic on POSIX within one file system). Result rows, the manifest, a
run's state and curve, predictions, tables, plots' stamps and benchmark tables all go through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any, *, compact: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically: indented with sorted keys, or on one line with
    ``compact`` (large files such as predictions). Values JSON cannot hold are written as their ``str``."""
    text = json.dumps(data, separators=(",", ":"), default=str) if compact else \
        json.dumps(data, indent=1, sort_keys=True, default=str)
    return write_text_atomic(path, text)
