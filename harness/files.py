"""Writing files atomically: a reader sees the old file or the whole new one, never half of one.

The one writer of the project: a temporary file in the target's folder, flushed and fsynced, then
``os.replace`` over the target (atomic on POSIX within one file system). Result rows, the manifest, a
run's state and curve, predictions, tables, plots, CSV files and benchmark tables all go through it.

Files and folders are made with the user's umask, like any other program's (0644 and 0755 under umask
022; a teammate reads a shared results folder): the temporary file is created with mode 0666 and the
temporary folder with 0777, which the kernel narrows by the umask (``tempfile.mkstemp`` and ``mkdtemp``
would make them 0600 and 0700 whatever the umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Callable

FILE_MODE = 0o666  # before the umask
FOLDER_MODE = 0o777


def _temporary_name(folder: Path, prefix: str, suffix: str) -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}{suffix}"


def _create_temporary_file(folder: Path, prefix: str) -> tuple[int, Path]:
    """A new, uniquely named file in ``folder`` opened for writing (mode 0666 less the umask)."""
    while True:
        tmp = _temporary_name(folder, prefix, ".tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE), tmp
        except FileExistsError:
            continue


def make_temporary_folder(parent: str | Path, prefix: str) -> Path:
    """A new, uniquely named folder ``<parent>/<prefix><random>`` (mode 0777 less the umask), for content
    that is then renamed into place as a whole."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temporary_name(parent, prefix, "")
        try:
            os.mkdir(tmp, FOLDER_MODE)
            return tmp
        except FileExistsError:
            continue


def file_in_the_way(path: str | Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder (a file where a folder would
    have to be), else None: an output location is checked with it before anything is measured or written."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return None
        if candidate.exists():
            return candidate
    return None


_SHA256: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) → sha256 of the file's bytes, in this process


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in chunks, and computed once per process for a given
    (path, size, mtime): a checkpoint or annotation file asked about again is not read again.
    OSError when it cannot be read."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


def prefixed(prefix: str | Path, suffix: str) -> Path:
    """The file ``<prefix><suffix>`` of an output prefix (``--out``): ``suffix`` appended to the prefix's
    name. ``Path.with_suffix`` would replace whatever follows a dot in it instead, so that
    ``results/bench/gpu.2026-12-04`` wrote ``results/bench/gpu.md``, not the ``gpu.2026-12-04.md`` reported."""
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + suffix)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` with a binary file that becomes ``path`` atomically once ``write`` returns
    (creating the folder); if ``write`` raises, ``path`` is left as it was. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its folder; returns the path."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda f: f.write(data))


def write_json_atomic(path: str | Path, data: Any, *, compact: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically: indented with sorted keys, or on one line with
    ``compact`` (large files such as predictions). Values JSON cannot hold are written as their ``str``."""
    text = json.dumps(data, separators=(",", ":"), default=str) if compact else \
        json.dumps(data, indent=1, sort_keys=True, default=str)
    return write_text_atomic(path, text)


def write_csv_atomic(path: str | Path, header: list, rows: list[list]) -> Path:
    """Write a CSV file (``header`` then ``rows``, the csv module's default dialect) atomically."""
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())
