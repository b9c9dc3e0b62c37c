"""``make bench-losses``: forward + backward time of the losses over N logits with P positives.

Writes ``<out>.csv`` (one row per device × N × P × loss) and ``<out>.md`` (a table per device, the
ratios measured in the same run, and the targets checked). Inputs: N float32 logits, negatives ~ N(0, 1)
and positives ~ N(0.5, 1), so nearly every negative is *relevant* (the worst case: no pruning helps);
positives' qualities uniform in (0.1, 1). The losses of one (N, P) cell are timed in turns (one run of
each, again and again, for about 8 s) after a warm-up, so a burst of load on the machine hits them
alike; each time is the median of its runs. The plain loop, seconds per call, is timed after them (three
runs, or one without a warm-up where N·P > 1e8). The denominator, ``focal``, is torchvision's plain
``sigmoid_focal_loss(logits, binary, reduction='sum')`` forward + backward on the same logits.

Bucketed RS / AP (comparators) also get their distance to the exact losses, in float64 on the same
inputs: ``|value − exact|`` and ``max_j |g_j − exact g_j|``, exact being RS for Bucketed RS and RS's
ranking component on binary targets (the uninterpolated AP error that Bucketed AP approximates) for
Bucketed AP. The plain per-positive loop (:mod:`harness.bench.plain`) is skipped where N·P would make it
take minutes; the table says so.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from torchvision.ops import sigmoid_focal_loss

from harness.bench.plain import plain_rank_sort
from harness.files import prefixed, write_csv_atomic, write_text_atomic
from harness.losses import (
    alrp_classification_loss,
    alrp_localisation_loss,
    ap_loss,
    bucketed_ap_loss,
    bucketed_rank_sort_loss,
    rank_sort_loss,
)

SIZES_N = (10_000, 100_000, 1_000_000, 4_000_000)
SIZES_P = (100, 1_000, 10_000)
TIME_BUDGET_S = 8.0  # seconds of turns per (N, P) cell
PLAIN_MAX_WORK = 1e9  # N·P above which the plain loop is skipped (minutes per call)
PLAIN_ONE_RUN_WORK = 1e8  # N·P above which the plain loop is timed once, without a warm-up
LOSSES = ("rs", "alrp", "ap", "bucketed_rs", "bucketed_ap", "focal", "plain_rs")
BUCKETED = ("bucketed_rs", "bucketed_ap")


@dataclass
class Row:
    device: str
    n: int
    p: int
    loss: str
    median_ms: float | None
    runs: int
    note: str = ""
    value_error: float | None = None  # bucketed losses: |value − exact| (float64)
    min_ms: float | None = None  # the fastest run (the least disturbed on a shared machine)
    grad_error: float | None = None  # bucketed losses: max |gradient − exact gradient| (float64)


def make_inputs(n: int, p: int, device: str, seed: int = 0):
    """``(logits, targets, loc_errors)``; float32, targets hold the positives' qualities."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g)
    targets = torch.zeros(n)
    idx = torch.randperm(n, generator=g)[:p]
    targets[idx] = torch.rand(p, generator=g) * 0.9 + 0.1
    logits[idx] += 0.5
    loc_errors = torch.rand(p, generator=g) * 2
    return logits.to(device), targets.to(device), loc_errors.to(device)


def _step(name: str, logits, targets, loc_errors, binary):
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
    elif name == "bucketed_rs":
        loss = bucketed_rank_sort_loss(x, targets).total
    elif name == "bucketed_ap":
        loss = bucketed_ap_loss(x, targets)
    else:  # the denominator: torchvision's plain sigmoid focal loss
        loss = sigmoid_focal_loss(x, binary, reduction="sum")
    loss.backward()


def time_cell(names, logits, targets, loc_errors, budget_s: float | None = None, max_runs: int = 15, min_runs: int = 3,
              warm_up: bool = True):
    """``{name: (median ms, runs, fastest ms)}``: the losses timed in turns, after one warm-up run of each, until
    ``budget_s`` (default ``TIME_BUDGET_S``) has passed and ``min_runs`` are done, or ``max_runs``."""
    budget_s = TIME_BUDGET_S if budget_s is None else budget_s
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    binary = (targets > 0).to(logits.dtype)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names if warm_up else ():
        _step(name, logits, targets, loc_errors, binary)
    sync()
    start = time.perf_counter()
    while True:
        for name in names:
            t0 = time.perf_counter()
            _step(name, logits, targets, loc_errors, binary)
            sync()
            times[name].append(time.perf_counter() - t0)
        runs = len(times[names[0]])
        if runs >= max_runs or (runs >= min_runs and time.perf_counter() - start >= budget_s):
            break
    return {name: (statistics.median(ts) * 1e3, len(ts), min(ts) * 1e3) for name, ts in times.items()}


def bucketed_errors(name: str, logits, targets) -> tuple[float, float]:
    """``(|value − exact|, max |gradient − exact gradient|)`` of a bucketed loss, in float64."""
    s, t = logits.detach().double(), targets.double()
    x, y = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    if name == "bucketed_rs":
        approx, exact = bucketed_rank_sort_loss(x, t).total, rank_sort_loss(y, t).total
    else:
        binary = (t > 0).double()
        approx, exact = bucketed_ap_loss(x, binary), rank_sort_loss(y, binary).ranking
    (g_approx,) = torch.autograd.grad(approx, x)
    (g_exact,) = torch.autograd.grad(exact, y)
    return abs(approx.item() - exact.item()), float((g_approx - g_exact).abs().max())


def run(devices: list[str], sizes_n=SIZES_N, sizes_p=SIZES_P, log=print) -> list[Row]:
    rows: list[Row] = []
    cells = [(d, n, p) for d in devices for n in sizes_n for p in sizes_p if p < n]
    for k, (device, n, p) in enumerate(cells, 1):
        logits, targets, loc_errors = make_inputs(n, p, device)
        timed = time_cell([name for name in LOSSES if name != "plain_rs"], logits, targets, loc_errors)
        if "plain_rs" in LOSSES and n * p <= PLAIN_MAX_WORK:  # seconds per call: timed on its own
            runs = 1 if n * p > PLAIN_ONE_RUN_WORK else 3
            timed.update(time_cell(["plain_rs"], logits, targets, loc_errors, budget_s=0.0, min_runs=runs,
                                   max_runs=runs, warm_up=runs > 1))
        for name in LOSSES:
            if name not in timed:
                rows.append(Row(device, n, p, name, None, 0, "skipped: N·P > 1e9, minutes per call"))
                continue
            ms, runs, fastest = timed[name]
            errors = bucketed_errors(name, logits, targets) if name in BUCKETED else (None, None)
            rows.append(Row(device, n, p, name, ms, runs, value_error=errors[0], grad_error=errors[1], min_ms=fastest))
            log(f"[{k}/{len(cells)}] {device} N={n:>9,} P={p:>6,} {name:<11} {ms:10.2f} ms ({runs} runs)")
    return rows


def _lookup(rows: list[Row], stat: str = "median_ms") -> dict:
    return {(r.device, r.n, r.p, r.loss): getattr(r, stat) for r in rows}


def _sci(n: int) -> str:
    """1000000 → '1e6', 4000000 → '4e6'."""
    exp = len(str(n)) - 1
    return f"{n // 10**exp}e{exp}" if n % 10**exp == 0 else f"{n:,}"


def targets_report(rows: list[Row], device: str = "cpu", stat: str = "median_ms") -> list[tuple[str, str, bool | None]]:
    """The issue's targets on ``device``: (what, measured, met). Ratios come from this run's rows, of
    their medians (``stat="median_ms"``) or fastest runs (``"min_ms"``)."""
    t = _lookup(rows, stat)
    get = lambda n, p, k: t.get((device, n, p, k))  # noqa: E731
    out = []
    exact = (("rs", "RS"), ("ap", "AP"), ("alrp", "aLRP"))
    focal_ns = (1_000_000,) if device == "cpu" else (1_000_000, 4_000_000)
    for n in focal_ns:
        focal = get(n, 1_000, "focal")
        for key, label in exact:
            ms = get(n, 1_000, key)
            if ms and focal:
                out.append((f"{label} ≤ 2× Focal (N={_sci(n)}, P=1e3)", f"{ms / focal:.2f}×", ms / focal <= 2))
    if device != "cpu":
        return out
    for key, label in exact:  # no P × P term
        a, b = get(1_000_000, 1_000, key), get(1_000_000, 10_000, key)
        if a and b:
            out.append((f"{label}: time at P=1e4 ≤ 3× time at P=1e3 (N=1e6)", f"{b / a:.2f}×", b / a <= 3))
    for key, label in exact:
        a, b = get(1_000_000, 1_000, key), get(4_000_000, 1_000, key)
        if a and b:
            out.append((f"{label}: time at 4N ≤ 4.5× time at N (N=1e6→4e6, P=1e3)", f"{b / a:.2f}×", b / a <= 4.5))
    for p in (1_000, 10_000):  # exact no slower than bucketed
        for key, label, bucketed in (("rs", "RS", "bucketed_rs"), ("ap", "AP", "bucketed_ap")):
            a, b = get(1_000_000, p, key), get(1_000_000, p, bucketed)
            if a and b:
                out.append((f"{label} no slower than Bucketed {label} (N=1e6, P={_sci(p)})", f"{a / b:.2f}×", a <= b))
    rs, plain = get(1_000_000, 1_000, "rs"), get(1_000_000, 1_000, "plain_rs")
    if rs and plain:
        out.append(("RS ≥ 50× faster than the plain loop (N=1e6, P=1e3)", f"{plain / rs:.0f}×", plain / rs >= 50))
    return out


def _gpu_note(rows: list[Row]) -> str:
    if not any(r.device == "cuda" for r in rows) or not torch.cuda.is_available():
        return ""
    return f", GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"


def _fmt_ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}×"


def _fmt_err(x: float | None) -> str:
    return "—" if x is None else "0" if x == 0 else f"{x:.1e}"


def write(rows: list[Row], out_prefix: str | Path) -> tuple[Path, Path]:
    out_prefix = Path(out_prefix)
    csv_path, md_path = prefixed(out_prefix, ".csv"), prefixed(out_prefix, ".md")
    opt = lambda x, f: "" if x is None else format(x, f)  # noqa: E731
    write_csv_atomic(csv_path, ["device", "N", "P", "loss", "median_ms", "runs", "note", "value_error", "grad_error",
                                "min_ms"],
                     [[r.device, r.n, r.p, r.loss, opt(r.median_ms, ".4f"), r.runs, r.note, opt(r.value_error, ".3e"),
                       opt(r.grad_error, ".3e"), opt(r.min_ms, ".4f")] for r in rows])

    t = _lookup(rows)
    errors = {(r.device, r.n, r.p, r.loss): (r.value_error, r.grad_error) for r in rows}
    lines = [
        "# Loss benchmark: forward + backward, median milliseconds",
        "",
        f"Generated by `make bench-losses` on {time.strftime('%Y-%m-%d')}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
        f"{_gpu_note(rows)}. "
        "Logits float32: negatives ~ N(0, 1), positives ~ N(0.5, 1) (almost every negative is relevant). "
        "Focal is torchvision's plain `sigmoid_focal_loss(..., reduction='sum')`, the denominator of every "
        "ratio. BRS / BAP are Bucketed RS / AP (Yavuz et al., ECCV 2024), comparators: their distance to "
        "the exact loss is measured in float64 on the same inputs (BRS against RS; BAP against RS's ranking "
        "component on binary targets, the uninterpolated AP error it buckets; AP Loss itself interpolates). "
        "`plain RS` is the published per-positive loop; `—` means skipped because it would take minutes. "
        "The losses of a row are timed in turns; ratios are from this run.",
        "",
    ]
    for device in sorted({r.device for r in rows}):
        lines += [
            f"## {device}",
            "",
            "| N | P | RS | aLRP | AP | BRS | BAP | Focal | plain RS | RS / Focal | aLRP / Focal | AP / Focal "
            "| RS / BRS | AP / BAP | BRS \\|Δvalue\\| | BRS max \\|Δgrad\\| | BAP \\|Δvalue\\| | BAP max \\|Δgrad\\| |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, p in sorted({(r.n, r.p) for r in rows if r.device == device}):
            v = {k: t.get((device, n, p, k)) for k in LOSSES}
            brs = errors.get((device, n, p, "bucketed_rs"), (None, None))
            bap = errors.get((device, n, p, "bucketed_ap"), (None, None))
            cols = [f"{n:,}", f"{p:,}"] + [_fmt_ms(v[k]) for k in ("rs", "alrp", "ap", "bucketed_rs", "bucketed_ap", "focal", "plain_rs")]
            cols += [_ratio(v["rs"], v["focal"]), _ratio(v["alrp"], v["focal"]), _ratio(v["ap"], v["focal"])]
            cols += [_ratio(v["rs"], v["bucketed_rs"]), _ratio(v["ap"], v["bucketed_ap"])]
            cols += [_fmt_err(x) for x in (*brs, *bap)]
            lines.append("| " + " | ".join(cols) + " |")
        lines.append("")
    mark = lambda ok: "—" if ok is None else "yes" if ok else "NO"  # noqa: E731
    for device in sorted({r.device for r in rows}):
        report = targets_report(rows, device)
        fastest = {what: (val, ok) for what, val, ok in targets_report(rows, device, "min_ms")}
        if report:
            lines += [
                f"## Targets ({device})",
                "",
                "Met or not by the medians; the same ratios of the fastest runs (the least disturbed when "
                "the machine is shared) beside them.",
                "",
                "| target | medians | met | fastest runs | met |",
                "|---|---:|:---:|---:|:---:|",
            ]
            for what, val, ok in report:
                f_val, f_ok = fastest.get(what, ("—", None))
                lines.append(f"| {what} | {val} | {mark(ok)} | {f_val} | {mark(f_ok)} |")
            lines.append("")
    write_text_atomic(md_path, "\n".join(lines))
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
