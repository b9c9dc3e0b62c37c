"""Wall time of ``make benchmark`` on this machine, and where it goes, kept under ``results/bench/``
beside the other benchmarks: ``benchmark.json`` (the latest full run and the latest fully cached rerun)
and ``benchmark.md`` (them against the targets: the whole grid, 3 seeds of 35 cells, in at most 10
minutes on the developers' 2 cores from a fresh clone, data generation included, so that a machine of the
same kind 1.5 times slower stays within 15; a cached rerun in at most 15 s).

For the latest full run it also keeps the split:

* the benchmark's steps (``steps``, measured by ``harness benchmark``): generating the synthetic data,
  the runs (two at a time), the tables and plots;
* the reference workload (:mod:`harness.bench.reference`), timed in the same invocation, and the full
  run's time as a multiple of it: the number that compares across machines;
* a cell's time by phase, from the ``timing`` each result row carries in its provenance (seconds, as
  measured inside the run's process by :mod:`harness.run`): ``startup`` (process start to the run's
  code: a fresh interpreter and its imports, or a fork of a preloaded worker), ``imports`` (torch,
  mmengine, mmdet and the plug-in inside the run), ``build`` (config, model, optimiser, data loaders),
  ``train`` (of which ``data``: loading and transforming images, and ``checkpoint``: saving), ``test``
  (of which ``evaluate``: COCO / LVIS AP and oLRP after inference) and ``finish`` (provenance, the row).

:func:`record` is called by ``harness benchmark`` when it ran the default spec on this machine (local
executor); a run that trained only some cells is neither kind and is not recorded.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

from harness.run import hardware

FULL_TARGET_S = 10 * 60
CACHED_TARGET_S = 15.0
BENCH_DIR = Path("results/bench")
# A run's phases (``provenance.timing``, seconds); nested ones are part of the phase before them.
PHASES = ("startup", "imports", "build", "train", "data", "checkpoint", "test", "evaluate", "finish")
NESTED = {"data": "train", "checkpoint": "train", "evaluate": "test"}
STEPS = (("data_s", "generate the synthetic data"), ("runs_s", "train and evaluate the runs"),
         ("tables_s", "tables and plots"), ("reference_s", "time the reference workload"))


def process_started_at() -> float:
    """Wall-clock time at which this process started (Linux ``/proc``), so that a timing includes the
    interpreter start-up and imports; the current time where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return time.time()


def cell_split(rows: Iterable[Mapping]) -> dict:
    """Per detector: the number of runs with a timing and the mean seconds of each phase, plus ``all``
    (summed over every run: core-seconds); from the rows' ``provenance.timing``."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        timing = (row.get("provenance") or {}).get("timing")
        if not isinstance(timing, Mapping):
            continue
        det = str(row.get("detector"))
        counts[det] += 1
        counts["all"] += 1
        wall = (row.get("provenance") or {}).get("wall_time_s")
        for key in (*PHASES, "total"):
            value = wall if key == "total" else timing.get(f"{key}_s")
            if isinstance(value, (int, float)):
                sums[det][key] += float(value)
                sums["all"][key] += float(value)
    out = {}
    for det, n in counts.items():
        if det == "all":
            out[det] = {"runs": n, **{k: round(v, 1) for k, v in sums[det].items()}}
        else:
            out[det] = {"runs": n, **{k: round(v / n, 2) for k, v in sums[det].items()}}
    return out


def allocators(rows: Iterable[Mapping]) -> dict[str, int]:
    """How many runs used each memory allocator (``provenance.allocator``, :mod:`harness.run.allocator`;
    ``unrecorded`` for rows from before it was recorded): it moves a run's time, never its values."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if isinstance((row.get("provenance") or {}).get("timing"), Mapping):
            counts[str((row.get("provenance") or {}).get("allocator") or "unrecorded")] += 1
    return dict(sorted(counts.items()))


def record(seconds: float, trained: int, total: int, generated_data: bool, out_dir: str | Path = BENCH_DIR, *,
           steps: Mapping[str, float] | None = None, rows: Iterable[Mapping] | None = None,
           slots: int | None = None, reference: Mapping | None = None) -> Path | None:
    """Keep ``seconds`` as the latest full run (every run trained) or cached rerun (none trained).
    ``steps``: seconds of the benchmark's steps (:data:`STEPS` keys); ``rows``: the experiment's result
    rows, for the split of a cell's time (full runs only); ``slots``: runs at once; ``reference``: the
    reference workload timed in the same invocation (:func:`harness.bench.reference.measure`)."""
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
    entry = {"seconds": round(seconds, 1), "runs": total, "trained": trained, "generated_data": generated_data,
             "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "machine": platform.machine(),
             "hardware": hardware.describe("cpu")}
    if steps:
        entry["steps"] = {k: round(float(v), 1) for k, v in steps.items()}
    if slots:
        entry["slots"] = slots
    if reference and reference.get("seconds"):
        entry["reference"] = {"seconds": round(float(reference["seconds"]), 3),
                              "repeats": list(reference.get("repeats", [])), "workload": reference.get("workload", "")}
        if reference.get("allocator"):
            entry["reference"]["allocator"] = str(reference["allocator"])
        for side in ("before", "after"):  # timed on both sides of the runs (harness.bench.reference.combined)
            if reference.get(side) is not None:
                entry["reference"][side] = round(float(reference[side]), 3)
    if kind == "full" and rows is not None:
        rows = list(rows)
        entry["cells"] = cell_split(rows)
        entry["allocators"] = allocators(rows)
    data[kind] = entry
    from harness.files import write_json_atomic, write_text_atomic

    write_json_atomic(path, data)
    return write_text_atomic(out_dir / "benchmark.md", render(data))


def _title(det: str) -> str:
    try:
        from harness.detectors.grid import DETECTORS

        return DETECTORS[det].title if det in DETECTORS else det
    except ImportError:  # pragma: no cover - the grid is part of the package
        return det


def _allocator_note(ref: Mapping) -> str:
    """Which allocator the reference workload's process had (older records do not say)."""
    if not ref.get("allocator"):
        return "; its allocator not recorded"
    name = "the C library's malloc" if ref["allocator"] == "system" else ref["allocator"]
    return f"; memory allocator {name}, as the runs get it"


def _drift_lines(ref: Mapping) -> list[str]:
    """How much the machine's speed moved during the run, when the reference was timed on both sides of it."""
    if ref.get("before") is None or ref.get("after") is None:
        return []
    before, after = float(ref["before"]), float(ref["after"])
    change = (after / before - 1) * 100 if before else 0.0
    return [f"Timed before the runs ({before:.2f} s) and after them ({after:.2f} s): the machine's speed moved by "
            f"{change:+.0f} % during the run, so read the multiple as uncertain by about that much; it uses the "
            "median of both times' repetitions.", ""]


def _reference_lines(full: Mapping) -> list[str]:
    """The full run against the reference workload timed in the same invocation."""
    ref = full.get("reference")
    if not ref:
        return []
    lines = ["", "## Times that compare across machines", "",
             f"The same invocation timed a fixed reference workload ({ref['workload']}): **{ref['seconds']:.2f} s** "
             f"(repetitions {', '.join(f'{t:.2f}' for t in ref['repeats'])} s{_allocator_note(ref)}). "
             "Measured together, the two "
             "slow down together on a slower or busier machine, so compare the multiples across machines: a "
             "larger multiple means the harness, not the machine, got slower.", "",
             *_drift_lines(ref),
             "| measure | seconds | × reference |", "|---|---:|---:|",
             f"| full run (`make benchmark`) | {full['seconds']:.1f} | {full['seconds'] / ref['seconds']:.1f} |"]
    runs = (full.get("cells") or {}).get("all", {}).get("total")
    if runs:
        lines.append(f"| runs' core-seconds (sum of run totals) | {runs:.0f} | {runs / ref['seconds']:.1f} |")
    return lines


def render(data: dict) -> str:
    lines = ["# `make benchmark`: wall time on this machine", "",
             "Written by `harness benchmark` (what `make benchmark` runs) after each run of the default spec "
             "(`experiments/synthetic.yaml`: 35 cells × 3 seeds, local executor): the latest full run (every "
             "run trained, the synthetic data generated first when it was not cached) and the latest rerun with "
             "everything cached (no run trained: rows read, tables rebuilt, plots reused unless a row changed).", "",
             "| run | when | runs trained | data generated | cores | seconds | target | met | × reference |",
             "|---|---|---:|:---:|---:|---:|---:|:---:|---:|"]
    for kind, target in (("full", FULL_TARGET_S), ("cached", CACHED_TARGET_S)):
        r = data.get(kind)
        if not r:
            lines.append(f"| {kind} | not measured yet | | | | | {target:g} s | | |")
            continue
        met = "yes" if r["seconds"] <= target else f"**no** (+{r['seconds'] - target:.0f} s)"
        multiple = f"{r['seconds'] / r['reference']['seconds']:.1f}" if r.get("reference") else ""
        lines.append(f"| {kind} | {r['date']} | {r['trained']} of {r['runs']} | {'yes' if r['generated_data'] else 'no'} "
                     f"| {r['cores']} | {r['seconds']:.1f} | {target:g} s | {met} | {multiple} |")
    measured_on = [f"the {kind} run on {data[kind]['hardware']}" for kind in ("full", "cached")
                   if (data.get(kind) or {}).get("hardware")]
    if measured_on:
        lines += ["", f"Measured on: {'; '.join(measured_on)} (`harness.run.hardware`)."]
    full = data.get("full") or {}
    lines += _reference_lines(full)
    if full.get("steps"):
        lines += ["", "## Where the full run's time goes", "",
                  "| step | seconds | share |", "|---|---:|---:|"]
        total = full["seconds"]
        accounted = 0.0
        for key, label in STEPS:
            if key in full["steps"]:
                v = full["steps"][key]
                accounted += v
                lines.append(f"| {label} | {v:.1f} | {v / total:.0%} |")
        lines.append(f"| start-up, planning, the rest | {max(0.0, total - accounted):.1f} | "
                     f"{max(0.0, total - accounted) / total:.0%} |")
        lines.append(f"| **total** | **{total:.1f}** | |")
    cells = full.get("cells")
    if cells:
        every = cells.get("all", {})
        cols = [p for p in PHASES if any(p in v for v in cells.values())]
        head = ["detector", "runs", *[p if p not in NESTED else f"({p})" for p in cols], "run total"]
        lines += ["", "## A run's time by phase", "",
                  "Mean seconds per run, measured inside each run's process (its row's `provenance.timing`); a "
                  "phase in brackets is part of the one before it (data loading and checkpoints of training, the "
                  "AP / oLRP evaluation of testing). `run total`: the run's wall time from its code's start to its "
                  "row. The last line sums every run (core-seconds)"
                  + (f"; with {full['slots']} runs at once the runs step above is at least that sum / "
                     f"{full['slots']}." if full.get("slots") else "."), "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for det in [d for d in cells if d != "all"]:
            v = cells[det]
            lines.append(f"| {_title(det)} | {v['runs']} | " + " | ".join(f"{v.get(p, 0):.2f}" for p in cols)
                         + f" | {v.get('total', 0):.2f} |")
        if every:
            lines.append(f"| **all runs (sum)** | {every['runs']} | " + " | ".join(f"{every.get(p, 0):.0f}" for p in cols)
                         + f" | {every.get('total', 0):.0f} |")
    if full.get("allocators"):
        used = ", ".join(f"{'the C library' if name == 'system' else name} in {n}" for name, n in full["allocators"].items())
        lines += ["", f"The runs' memory allocator (`provenance.allocator`; it moves a run's time, never its values): "
                      f"{used} of {sum(full['allocators'].values())} runs."]
    return "\n".join(lines) + "\n"
