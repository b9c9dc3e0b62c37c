"""The memory allocator of a run's process: tcmalloc where it is installed, else the C library's malloc.

A training step of the tiny profile makes and frees thousands of small tensors; tcmalloc serves them
from its own caches faster than the C library's malloc: on this machine (one thread a run) a tiny
training step takes 9 to 18 % less time with it (Faster R-CNN 80 -> 73 ms, YOLACT 59 -> 50 ms, ATSS 52
-> 43 ms), and a run computes the same values bit for bit (its row's metrics and curve are equal).
``scripts/setup.sh`` installs it with apt where it can (``libtcmalloc-minimal4``).

The processes the local executor starts for runs (forked single-process runs and multi-process runs)
preload it (``LD_PRELOAD``) when it is found (see :func:`library`); ``HARNESS_ALLOCATOR=system`` keeps the
C library's malloc. The rehearsal's processes do not: at the paper profile's scale a rehearsed Faster
R-CNN (4 processes, 1333 x 800) took 93-101 s with it against 84-86 s without. The allocator changes no
value a run computes, only how fast, so it is not part of a run's fingerprint; its row records it
(``provenance.allocator``, :func:`in_use`), and ``harness benchmark`` reports the runs' allocators beside
its times.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

ENV = "HARNESS_ALLOCATOR"  # "system": the C library's malloc; unset or "tcmalloc": tcmalloc when found
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
           "/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# tcmalloc prints a line for every allocation above 1 GiB; the paper profile's tensors can be that large
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def library() -> str | None:
    """The tcmalloc library the harness's run processes preload: the first of :data:`NAMES` in
    :data:`FOLDERS`; None when none is installed or ``HARNESS_ALLOCATOR=system``."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice == "system":
        return None
    if choice not in ("", "tcmalloc"):
        raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 'system' (the C library's malloc) or 'tcmalloc' "
                         "(the default, when installed)")
    for folder in FOLDERS:
        for name in NAMES:
            path = Path(folder) / name
            if path.is_file():
                return str(path)
    return None


@contextlib.contextmanager
def preloaded() -> Iterator[str | None]:
    """Meanwhile, the processes this one starts preload :func:`library` (``LD_PRELOAD``, and tcmalloc's
    large-allocation lines silenced); yields the library (None: the C library's malloc). This process's
    environment is restored afterwards."""
    lib = library()
    keys = ("LD_PRELOAD", *QUIET)
    saved = {k: os.environ.get(k) for k in keys}
    if lib is not None:
        current = [p for p in (saved["LD_PRELOAD"] or "").replace(" ", ":").split(":") if p]
        if lib not in current:
            os.environ["LD_PRELOAD"] = ":".join([lib, *current])
        for key, value in QUIET.items():
            os.environ.setdefault(key, value)
    try:
        yield lib
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_use() -> str:
    """This process's allocator: the file name of a tcmalloc or jemalloc library mapped into it, else
    ``'system'`` (the C library's malloc)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1] if "/" in line else ""
        if name.startswith(("libtcmalloc", "libjemalloc")):
            return name
    return "system"
