"""What computed a run: its processor's model and vector instructions, and its GPU where it used one, as
its row records them (``provenance.hardware``).

The same code, data, stack and seed need not give a run the same values on two machines. A convolution's
CPU kernel is chosen by the vector instructions the processor offers (oneDNN's levels: AVX2, AVX-512,
AVX-512 with VNNI, with BF16, with AMX) and each level sums in its own order, so the last bits of a step
differ, and training from scratch carries them into a different run: another sample of the same seed
noise, not a better or worse one. Seen on the developers' machine: the grid computed the same 105 rows
bit for bit in every full run from 03:50 to 20:12 UTC on 2026-12-05; after the machine restarted
(2026-12-06, its processor then reporting AVX-512 with AMX; the earlier one's was not recorded), the same
commit with the same pinned packages gave 47 of the grid's 50 AP seed means (box and mask) other values,
by up to 2 points (YOLACT's CE 4.70 -> 2.66). A GPU's kernels likewise depend on its model.

So a row names its hardware, ``harness compare-runs`` says when two folders' rows come from different
hardware (then ``equal`` cannot be expected), and ``harness benchmark`` names the machine it timed.
The hardware is not part of the fingerprint: a teammate's rows from another node are not stale, they are
rows of the same code computed elsewhere.
"""

from __future__ import annotations

import functools
import os
import platform

# oneDNN's ISA levels, highest first, each with the /proc/cpuinfo flags that make it (x86-64 only)
X86_LEVELS = (
    ("AVX-512 + AMX", ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")),
    ("AVX-512 + BF16", ("avx512f", "avx512_bf16")),
    ("AVX-512 + VNNI", ("avx512f", "avx512_vnni")),
    ("AVX-512", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX2", ("avx2", "fma")),
    ("SSE4.1", ("sse4_1",)),
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none: not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def vector_level(flags: set[str]) -> str | None:
    """The highest of :data:`X86_LEVELS` whose flags are all present, or None."""
    for name, needed in X86_LEVELS:
        if all(f in flags for f in needed):
            return name
    return None


@functools.cache
def cpu() -> str:
    """``<model>, <n> cores, <vector level>``, e.g. ``Intel(R) Xeon(R) Processor, 2 cores, AVX-512 + AMX``.
    The level comes from the flags where /proc/cpuinfo has them, else from torch's dispatch level."""
    info = _cpuinfo()
    model = (info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()
             or "unknown CPU")
    level = vector_level(set(info.get("flags", "").split()))
    if level is None:
        try:
            import torch

            level = f"torch {torch.backends.cpu.get_cpu_capability()}"
        except Exception:  # noqa: BLE001 - no torch or an old one: say what is known
            level = platform.machine() or "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{' '.join(model.split())}, {cores} cores, {level}"


def gpu() -> str | None:
    """The current CUDA device's name and compute capability, or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} (sm {major}.{minor})"
    except Exception:  # noqa: BLE001 - a broken driver: the row still records its CPU
        return None


def describe(device: str | None = None) -> str:
    """What computed a run on ``device`` (its row's ``provenance.device``; None: a run that failed before
    saying, which trains on CUDA wherever torch has it): the GPU then the CPU for a CUDA run, the CPU alone
    otherwise."""
    card = gpu() if device is None or str(device).startswith("cuda") else None
    return f"{card}; CPU {cpu()}" if card else f"CPU {cpu()}"
