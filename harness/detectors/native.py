"""The harness's C kernels: built from their source in this folder with the machine's C compiler, loaded
through ``ctypes``.

Two kernels: ``roi_align.c`` (RoIAlign on a CPU, torchvision's values bit for bit; see
:mod:`harness.detectors.kernels`) and ``sgd.c`` (SGD's update on a CPU, torch's values bit for bit; see
:mod:`harness.detectors.sgd`). :func:`load` compiles each on first use into a per-user cache
(``$HARNESS_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/harness/native``, else ``~/.cache/harness/native``), under
a name that hashes the source, the compiler command and the machine, so an edited source or another
machine's cache never loads a stale or foreign library; the file is written under a temporary name and
renamed, so processes building it at once (two runs, an array of jobs on a shared home) never load half a
file. ``make setup`` builds it ahead (``python -m harness.detectors.native``).

Flags: ``-O3`` and ``-ffp-contract=off`` (no fused multiply-add the source does not write, whose single
rounding would change the values), and ``-mavx2 -mfma`` where torch reports that this CPU has AVX2 (eight
lanes per instruction, each doing the same IEEE operations; the fused multiply-adds ``sgd.c`` writes in one
instruction instead of a library call: the same values). No compiler, or a failed build: :func:`load`
returns None with the reason (:func:`unavailable`), and the callers keep torch's and torchvision's own
kernels: the same values, slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"roi_align": HERE / "roi_align.c", "sgd": HERE / "sgd.c"}
USES = {"roi_align": "RoIAlign on a CPU will use torchvision's kernels", "sgd": "SGD on a CPU will use torch's own update"}
ENV_CACHE = "HARNESS_NATIVE_CACHE"
ENV_DISABLE = "HARNESS_NATIVE"  # 'off': never build or load (the callers use torchvision's kernels)
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off")

_loaded: dict[str, ctypes.CDLL | None] = {}
_why: dict[str, str] = {}


def disabled() -> bool:
    """True when ``HARNESS_NATIVE=off`` (or ``0`` / ``no``): the C kernels are neither built nor loaded."""
    return os.environ.get(ENV_DISABLE, "").strip().lower() in ("off", "0", "no")


def cache_dir() -> Path:
    """Where built libraries are kept (see the module's docstring)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harness" / "native"


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on the PATH; None when there is none."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"]) or None
    return shutil.which("cc") or shutil.which("gcc")


def flags() -> tuple[str, ...]:
    """The compiler flags for this machine (``-mavx2 -mfma`` where torch finds AVX2 on an x86 CPU)."""
    extra: tuple[str, ...] = ()
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            import torch

            capability = torch.backends.cpu.get_cpu_capability()
        except Exception:  # an old torch: stay with the baseline instruction set
            capability = "DEFAULT"
        if capability.startswith("AVX2") or capability.startswith("AVX512"):
            extra = ("-mavx2", "-mfma")  # torch's AVX2 level requires both
    return BASE_FLAGS + extra


def fused_multiply_add() -> bool:
    """True where :func:`flags` include ``-mfma`` (torch's AVX2 or AVX-512 level): there ATen computes
    ``a + alpha * b`` as one fused multiply-add, which ``sgd.c`` must match."""
    return "-mfma" in flags()


def library_path(name: str, cc: str) -> Path:
    """The cached library of kernel ``name`` built by ``cc`` with :func:`flags` on this machine."""
    source = SOURCES[name].read_bytes()
    key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags()).encode(),
                                     platform.machine().encode(), sys.platform.encode()])).hexdigest()[:16]
    return cache_dir() / f"{name}-{key}.so"


def build(name: str) -> Path:
    """Compile kernel ``name`` into the cache (nothing to do when it is there); its path. Raises
    ``RuntimeError`` saying why when there is no compiler or the build fails."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) on the PATH; install one (Debian: apt-get install gcc)")
    path = library_path(name, cc)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags(), "-o", tmp, str(SOURCES[name])], capture_output=True, text=True)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
            raise RuntimeError(f"{cc} could not build {SOURCES[name].name}: {first}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(name: str) -> ctypes.CDLL | None:
    """Kernel ``name``'s library, built if needed (once per process); None when it cannot be built or
    ``HARNESS_NATIVE=off`` (:func:`unavailable` says why)."""
    if name in _loaded:
        return _loaded[name]
    lib = None
    if disabled():
        _why[name] = f"{ENV_DISABLE}=off"
    else:
        try:
            lib = ctypes.CDLL(str(build(name)))
        except (OSError, RuntimeError) as err:
            _why[name] = str(err)
    _loaded[name] = lib
    return lib


def unavailable(name: str) -> str | None:
    """Why kernel ``name`` did not load (None when it did, or :func:`load` was not called yet)."""
    return _why.get(name)


def main() -> int:
    """``python -m harness.detectors.native``: build every kernel now (``make setup`` runs it); exit code 1
    with the reason when one cannot be built."""
    status = 0
    for name in SOURCES:
        try:
            print(f"{name}: {build(name)}")
        except RuntimeError as err:
            print(f"{name}: not built ({err}); {USES[name]} (same values, slower)", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
