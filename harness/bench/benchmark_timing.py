"""Wall time of ``make benchmark`` on this machine, kept under ``results/bench/`` beside the other
benchmarks: ``benchmark.json`` (the latest full run and the latest fully cached rerun) and
``benchmark.md`` (them against the targets: the whole grid in at most 15 minutes on 2 cores, a cached
rerun in at most 15 s).

:func:`record` is called by ``harness benchmark`` when it ran the default spec on this machine (local
executor); a run that trained only some cells is neither kind and is not recorded.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

FULL_TARGET_S = 15 * 60
CACHED_TARGET_S = 15.0
BENCH_DIR = Path("results/bench")


def process_started_at() -> float:
    """Wall-clock time at which this process started (Linux ``/proc``), so that a timing includes the
    interpreter start-up and imports; the current time where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return time.time()


def record(seconds: float, trained: int, total: int, generated_data: bool, out_dir: str | Path = BENCH_DIR) -> Path | None:
    """Keep ``seconds`` as the latest full run (every run trained) or cached rerun (none trained)."""
    if trained not in (0, total) or not total:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "benchmark.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    kind = "cached" if trained == 0 else "full"
    data[kind] = {"seconds": round(seconds, 1), "runs": total, "trained": trained, "generated_data": generated_data,
                  "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "machine": platform.machine()}
    from harness.files import write_json_atomic, write_text_atomic

    write_json_atomic(path, data)
    return write_text_atomic(out_dir / "benchmark.md", render(data))


def render(data: dict) -> str:
    lines = ["# `make benchmark`: wall time on this machine", "",
             "Written by `harness benchmark` (what `make benchmark` runs) after each run of the default spec "
             "(`experiments/synthetic.yaml`, local executor): the latest full run (every cell trained, the "
             "synthetic data generated first when it was not cached) and the latest rerun with everything cached "
             "(no cell trained: rows read, tables rebuilt, plots reused unless a row changed).", "",
             "| run | when | cells trained | data generated | cores | seconds | target | met |",
             "|---|---|---:|:---:|---:|---:|---:|:---:|"]
    for kind, target in (("full", FULL_TARGET_S), ("cached", CACHED_TARGET_S)):
        r = data.get(kind)
        if not r:
            lines.append(f"| {kind} | not measured yet | | | | | {target:g} s | |")
            continue
        met = "yes" if r["seconds"] <= target else "**no**"
        lines.append(f"| {kind} | {r['date']} | {r['trained']} of {r['runs']} | {'yes' if r['generated_data'] else 'no'} "
                     f"| {r['cores']} | {r['seconds']:.1f} | {target:g} s | {met} |")
    return "\n".join(lines) + "\n"
