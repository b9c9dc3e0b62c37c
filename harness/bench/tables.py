"""``make bench-tables``: how long the tables take for 10 000 result rows (target: at most 2 s).

Builds 10 000 synthetic result rows in memory (7 detectors × 5 losses × 286 seeds, the last ten left
out; 2 % failed; box metrics for box detectors, mask metrics for mask detectors, LVIS-free COCO keys;
a 20-point training curve each), then times, as the median of several repeats:

1. ``frame``: rows → the tidy DataFrame (:func:`harness.results.frame.rows_frame`);
2. ``tables``: cell statistics and every table (:func:`harness.results.tables.build_tables`, with the
   published numbers);
3. ``render``: every table as Markdown and LaTeX, and ``cells.csv`` (the cell statistics) as text.

The target applies to 1 + 2 + 3, timed together ("all tables from 10 000 rows"). For information it
also times ``runs.csv`` (the frame itself as CSV: a data export, not a table; it grows with the rows),
reading the 10 000 row files from disk (``read_rows``) and writing every output file, which depend on
the file system. Writes ``<out>`` (Markdown) and prints it; exit code 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.detectors.grid import LOSS_NAMES
from harness.results.frame import METRIC_FAMILIES, rows_frame
from harness.results.tables import build_tables, to_latex, to_markdown, write_tables
from harness.rows import read_rows

N_ROWS = 10_000
TARGET_S = 2.0
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
OLRP_KEYS = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")


def synthetic_rows(n: int = N_ROWS, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    cells = [(d, l) for d in METRIC_FAMILIES for l in LOSS_NAMES]
    seeds = -(-n // len(cells))
    rows = []
    for s in range(seeds):
        for det, loss in cells:
            if len(rows) == n:
                return rows
            failed = rng.random() < 0.02
            metrics = {}
            if not failed:
                for fam in METRIC_FAMILIES[det]:
                    base = rng.uniform(0.2, 0.4)
                    metrics.update({f"{fam}_{k}": base + rng.gauss(0, 0.01) for k in AP_KEYS})
                    metrics.update({f"{fam}_{k}": rng.uniform(0.6, 0.8) for k in OLRP_KEYS})
            rows.append({
                "run_id": f"{det}-{loss}-s{s}-{rng.getrandbits(40):010x}", "experiment": "bench", "detector": det,
                "loss": loss, "seed": s, "dataset": {"kind": "synthetic", "root": None, "repeat_factor": None},
                "profile": "tiny", "schedule": {"epochs": 4, "lr": None, "batch_per_gpu": None, "checkpoint_every": 1,
                                                "val_every": None, "max_iters_per_epoch": None},
                "loss_modules": [], "status": "failed" if failed else "done",
                "reason": "non-finite loss at iteration 3" if failed else None, "metrics": metrics,
                "curve": [[i * 10, 2.0 / (i + 1), {"loss_cls": 1.2 / (i + 1), "loss_bbox": 0.8 / (i + 1)}]
                          for i in range(20)],
                "provenance": {"git_commit": "0" * 40, "git_dirty": False,
                               "versions": {"torch": "2.14.1", "mmdet": "3.3.0", "mmcv": "2.1.0"},
                               "effective_batch": 2, "lr": 0.01, "recipe_batch": 16, "recipe_lr": 0.012,
                               "wall_time_s": rng.uniform(30, 60), "job_id": f"1_{len(rows)}", "host": "node",
                               "restarts": 0, "finished_at": "2025-01-01T00:00:00"},
            })
    return rows


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _render(tset, frame) -> int:
    size = 0
    for tables in tset.tables.values():
        for t in tables:
            size += len(to_markdown(t)) + len(to_latex(t))
    size += len(tset.markdown()) + len(tset.stats.to_csv(index=False))
    return size


def run(n: int = N_ROWS, repeats: int = 5, disk: bool = True) -> dict:
    rows = synthetic_rows(n)
    build_tables(rows_frame(rows[:100]))  # warm-up: imports, jinja2 templates, the paper CSV
    t_frame, frame = _median_time(lambda: rows_frame(rows), repeats)
    t_tables, tset = _median_time(lambda: build_tables(frame), repeats)
    t_render, _ = _median_time(lambda: _render(tset, frame), repeats)
    t_all, _ = _median_time(lambda: _render(build_tables(rows_frame(rows)), frame), repeats)
    t_runs_csv, _ = _median_time(lambda: frame.to_csv(index=False), repeats)
    out = {"n": len(rows), "cells": len(tset.stats.drop_duplicates(["detector", "loss"])), "frame_s": t_frame,
           "tables_s": t_tables, "render_s": t_render, "total_s": t_all, "runs_csv_s": t_runs_csv,
           "repeats": repeats}
    if disk:
        with tempfile.TemporaryDirectory() as tmp:
            runs = Path(tmp) / "runs"
            runs.mkdir()
            for r in rows:  # plain writes: write_row's fsync per file would take minutes and time nothing of ours
                (runs / f"{r['run_id']}.json").write_text(json.dumps(r))
            out["read_s"], _ = _median_time(lambda: read_rows(tmp, warn=False), 1)
            out["write_s"], _ = _median_time(lambda: write_tables(tset, frame, Path(tmp) / "tables"), 1)
    return out


def report(res: dict) -> tuple[str, bool]:
    met = res["total_s"] <= TARGET_S
    lines = [
        "# Table benchmark: 10 000 result rows → every table",
        "",
        f"Generated by `make bench-tables` on {time.strftime('%Y-%m-%d')}; Python {platform.python_version()}, "
        f"pandas {pd.__version__}, {platform.machine()}, {os.cpu_count()} CPU cores (shared). "
        f"{res['n']:,} synthetic rows over {res['cells']} detector × loss cells (2 % failed); median of "
        f"{res['repeats']} repeats. Code: `harness/bench/tables.py`.",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| rows → tidy DataFrame | {res['frame_s']:.3f} |",
        f"| cell statistics + all tables (with published numbers) | {res['tables_s']:.3f} |",
        f"| render every table: Markdown, LaTeX, cells.csv | {res['render_s']:.3f} |",
        f"| **all tables from the rows (end to end)** | **{res['total_s']:.3f}** |",
        f"| (information) runs.csv: the tidy frame itself as CSV, one line per run | {res['runs_csv_s']:.3f} |",
        f"| (information) all of the above: every table and runs.csv | {res['total_s'] + res['runs_csv_s']:.3f} |",
    ]
    if "read_s" in res:
        lines += [f"| (information) reading the {res['n']:,} row files from disk | {res['read_s']:.3f} |",
                  f"| (information) writing every table file | {res['write_s']:.3f} |"]
    lines += ["", "## Target", "", "| target | measured | met |", "|---|---:|:---:|",
              f"| all tables from 10 000 rows ≤ {TARGET_S:g} s | {res['total_s']:.2f} s | {'yes' if met else 'NO'} |", ""]
    return "\n".join(lines), met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench/tables.md")
    parser.add_argument("--rows", type=int, default=N_ROWS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-disk", action="store_true", help="skip the (informational) disk timings")
    args = parser.parse_args(argv)
    res = run(args.rows, args.repeats, not args.no_disk)
    text, met = report(res)
    from harness.files import write_text_atomic

    write_text_atomic(args.out, text)
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
