"""``make bench-losses``: forward + backward time of the losses over N logits with P positives.

Writes ``<out>.csv`` (one row per device × N × P × loss) and ``<out>.md`` (a table per device, the
ratios measured in the same run, and the targets checked). Inputs: N float32 logits, negatives ~ N(0, 1)
and positives ~ N(0.5, 1), so nearly every negative is *relevant* (the worst case: no pruning helps);
positives' qualities uniform in (0.1, 1). Each time is the median of several runs after a warm-up.
The plain per-positive loop (:mod:`harness.bench.plain`) is skipped where N·P would make it take
minutes; the table says so.
"""

from __future__ import annotations

import csv
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.bench.plain import plain_rank_sort
from harness.losses import alrp_classification_loss, alrp_localisation_loss, ap_loss, focal_loss, rank_sort_loss

SIZES_N = (10_000, 100_000, 1_000_000, 4_000_000)
SIZES_P = (100, 1_000, 10_000)
PLAIN_MAX_WORK = 1e9  # N·P above which the plain loop is skipped (minutes per call)
LOSSES = ("rs", "alrp", "ap", "focal", "plain_rs")


@dataclass
class Row:
    device: str
    n: int
    p: int
    loss: str
    median_ms: float | None
    runs: int
    note: str = ""


def make_inputs(n: int, p: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g)
    targets = torch.zeros(n)
    idx = torch.randperm(n, generator=g)[:p]
    targets[idx] = torch.rand(p, generator=g) * 0.9 + 0.1
    logits[idx] += 0.5
    loc_errors = torch.rand(p, generator=g) * 2
    return logits.to(device), targets.to(device), loc_errors.to(device)


def _step(name: str, logits, targets, loc_errors):
    """One forward + backward of ``name``."""
    if name == "plain_rs":
        plain_rank_sort(logits, targets)
        return
    x = logits.detach().requires_grad_(True)
    if name == "rs":
        loss = rank_sort_loss(x, targets).total
    elif name == "alrp":
        e = loc_errors.detach().requires_grad_(True)
        cls, ranks = alrp_classification_loss(x, targets, e)
        loss = cls + 50.0 * alrp_localisation_loss(x, targets, e, ranks)
    elif name == "ap":
        loss = ap_loss(x, targets)
    else:
        loss = focal_loss(x, targets)
    loss.backward()


def time_one(name: str, logits, targets, loc_errors, budget_s: float = 3.0, max_runs: int = 9) -> tuple[float, int]:
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    _step(name, logits, targets, loc_errors)  # warm-up
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        _step(name, logits, targets, loc_errors)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, len(times)


def run(devices: list[str], sizes_n=SIZES_N, sizes_p=SIZES_P, log=print) -> list[Row]:
    rows: list[Row] = []
    cells = [(d, n, p) for d in devices for n in sizes_n for p in sizes_p if p < n]
    for k, (device, n, p) in enumerate(cells, 1):
        logits, targets, loc_errors = make_inputs(n, p, device)
        for name in LOSSES:
            if name == "plain_rs" and n * p > PLAIN_MAX_WORK:
                rows.append(Row(device, n, p, name, None, 0, "skipped: N·P > 1e9, minutes per call"))
                continue
            ms, runs = time_one(name, logits, targets, loc_errors)
            rows.append(Row(device, n, p, name, ms, runs))
            log(f"[{k}/{len(cells)}] {device} N={n:>9,} P={p:>6,} {name:<8} {ms:10.2f} ms ({runs} runs)")
    return rows


def _lookup(rows: list[Row]) -> dict:
    return {(r.device, r.n, r.p, r.loss): r.median_ms for r in rows}


def targets_report(rows: list[Row], device: str = "cpu") -> list[tuple[str, str, bool | None]]:
    """The issue's targets on this CPU: (what, measured, met)."""
    t = _lookup(rows)
    out = []
    rs, plain, focal = (t.get((device, 1_000_000, 1_000, k)) for k in ("rs", "plain_rs", "focal"))
    if rs and plain:
        out.append(("RS ≥ 50× faster than the plain loop (N=1e6, P=1e3)", f"{plain / rs:.0f}×", plain / rs >= 50))
    if rs and focal:
        out.append(("RS ≤ 3× Focal (N=1e6, P=1e3)", f"{rs / focal:.2f}×", rs / focal <= 3))
    a, b = t.get((device, 1_000_000, 1_000, "rs")), t.get((device, 4_000_000, 1_000, "rs"))
    if a and b:
        out.append(("RS: time at 4N ≤ 5× time at N (N=1e6→4e6, P=1e3)", f"{b / a:.2f}×", b / a <= 5))
    for name in ("alrp", "ap", "focal"):  # for reference: no target
        a, b = t.get((device, 1_000_000, 1_000, name)), t.get((device, 4_000_000, 1_000, name))
        if a and b:
            out.append((f"{name}: time at 4N / time at N (for reference)", f"{b / a:.2f}×", None))
    return out


def _gpu_note(rows: list[Row]) -> str:
    if not any(r.device == "cuda" for r in rows) or not torch.cuda.is_available():
        return ""
    return f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"


def write(rows: list[Row], out_prefix: str | Path) -> tuple[Path, Path]:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_prefix.with_suffix(".csv"), out_prefix.with_suffix(".md")
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device", "N", "P", "loss", "median_ms", "runs", "note"])
        for r in rows:
            w.writerow([r.device, r.n, r.p, r.loss, "" if r.median_ms is None else f"{r.median_ms:.4f}", r.runs, r.note])
    tmp.replace(csv_path)

    t = _lookup(rows)
    lines = [
        "# Loss benchmark: forward + backward, median milliseconds",
        "",
        f"Generated by `make bench-losses` on {time.strftime('%Y-%m-%d')}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
        f"{_gpu_note(rows)}. "
        "Logits float32: negatives ~ N(0, 1), positives ~ N(0.5, 1) (almost every negative is relevant). "
        "`plain RS` is the published per-positive loop; `—` means skipped because it would take minutes. "
        "Ratios are from this run.",
        "",
    ]
    for device in sorted({r.device for r in rows}):
        lines += [f"## {device}", "", "| N | P | RS | aLRP | AP | Focal | plain RS | RS / Focal | plain / RS |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n, p in sorted({(r.n, r.p) for r in rows if r.device == device}):
            v = {k: t.get((device, n, p, k)) for k in LOSSES}
            fmt = lambda x: "—" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"
            ratio = lambda a, b: "—" if not a or not b else f"{a / b:.2f}×"
            lines.append(
                f"| {n:,} | {p:,} | {fmt(v['rs'])} | {fmt(v['alrp'])} | {fmt(v['ap'])} | {fmt(v['focal'])} | "
                f"{fmt(v['plain_rs'])} | {ratio(v['rs'], v['focal'])} | {ratio(v['plain_rs'], v['rs'])} |"
            )
        lines.append("")
    report = targets_report(rows)
    if report:
        lines += ["## Targets (CPU)", "", "| target | measured | met |", "|---|---:|:---:|"]
        lines += [f"| {what} | {val} | {'—' if ok is None else 'yes' if ok else 'NO'} |" for what, val, ok in report]
        lines.append("")
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(md_path)
    return csv_path, md_path


def main(out_prefix: str, devices: list[str] | None = None, quick: bool = False) -> int:
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    sizes_n, sizes_p = ((10_000, 40_000), (100, 1_000)) if quick else (SIZES_N, SIZES_P)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    rows = run(devices, sizes_n, sizes_p, log=log)
    csv_path, md_path = write(rows, out_prefix)
    print(md_path.read_text())
    print(f"wrote {md_path} and {csv_path}")
    return 0
