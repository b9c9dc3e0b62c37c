"""Training-step time of every cell at the tiny profile on this CPU (``make bench-steps``).

For each cell: the tiny model, a synthetic batch of :data:`~harness.detectors.builder.TINY_BATCH` images
of 128 pixels (the tiny profile's batch), SGD; ``warmup`` untimed steps, then the median of ``repeats``
timed steps (data preprocessing, forward, loss, backward, optimizer step), one torch thread.

The target (RS-ATSS step at most 1.15 x Focal-ATSS; the paper reports about 1.5 x on GPUs) is measured
separately, the two models' steps interleaved over ``target_rounds`` rounds so that a change in the
machine's load hits both alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

TARGET_CELL = ("atss", "rs")
TARGET_REFERENCE = ("atss", "focal")
TARGET_RATIO = 1.15  # an RS step at most 1.15 x the baseline loss's (here RS-ATSS / Focal-ATSS; gpu-check too)


@dataclass
class StepTime:
    detector: str
    loss: str
    family: str
    median_s: float
    min_s: float
    steps: int


def _model(detector: str, loss: str, seed: int = 0):
    import torch

    from harness.detectors.builder import build_cell_config
    from harness.detectors.check import CHECK_CLASSES, build_model, sgd_wrapper

    torch.manual_seed(seed)
    cfg = build_cell_config(detector, loss, classes=CHECK_CLASSES, profile="tiny")
    model = build_model(cfg)
    model.train()
    return model, sgd_wrapper(model, cfg.optim_wrapper.optimizer.lr), cfg


def _step(model, optim_wrapper, batch) -> float:
    from harness.detectors.check import train_step

    start = time.perf_counter()
    train_step(model, batch, optim_wrapper)
    return time.perf_counter() - start


def time_cell(detector: str, loss: str, batch, repeats: int = 5, warmup: int = 2) -> StepTime:
    from harness.detectors.grid import head_family
    from harness.losses import get_loss

    model, optimizer, _ = _model(detector, loss)
    for _ in range(warmup):
        _step(model, optimizer, batch)
    times = [_step(model, optimizer, batch) for _ in range(repeats)]
    return StepTime(detector, loss, head_family(get_loss(loss)), statistics.median(times), min(times), repeats)


def time_pair(a: tuple[str, str], b: tuple[str, str], batch, rounds: int = 7, per_round: int = 3,
              warmup: int = 2) -> tuple[float, float]:
    """Median step times of two cells measured in alternation."""
    ma, oa, _ = _model(*a)
    mb, ob, _ = _model(*b)
    for _ in range(warmup):
        _step(ma, oa, batch)
        _step(mb, ob, batch)
    ta, tb = [], []
    for _ in range(rounds):
        ta += [_step(ma, oa, batch) for _ in range(per_round)]
        tb += [_step(mb, ob, batch) for _ in range(per_round)]
    return statistics.median(ta), statistics.median(tb)


def run_step_benchmark(out_prefix: str | Path = "results/bench/steps", repeats: int = 5, warmup: int = 2,
                       cells: list[tuple[str, str]] | None = None, threads: int = 1, target_rounds: int = 7,
                       log=print) -> dict:
    """Time every cell's training step; write ``<out_prefix>.md`` and ``.csv``. Returns ``{'rows': [...],
    'target': {...}}`` where the target entry says whether RS-ATSS ≤ 1.15 x Focal-ATSS held."""
    import torch

    from harness.detectors import cells as all_cells
    from harness.detectors.builder import TINY_BATCH, TINY_SIZE
    from harness.detectors.check import CHECK_CLASSES, synthetic_batch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch = synthetic_batch(num_images=TINY_BATCH, size=TINY_SIZE, num_classes=len(CHECK_CLASSES))
        rows = []
        for det, loss in cells or all_cells():
            row = time_cell(det, loss, batch, repeats=repeats, warmup=warmup)
            rows.append(row)
            log(f"{det:<13} {loss:<6} {row.median_s * 1000:8.1f} ms")
        t_cell, t_ref = time_pair(TARGET_CELL, TARGET_REFERENCE, batch, rounds=target_rounds)
    finally:
        torch.set_num_threads(saved)
    ratio, limit = t_cell / t_ref, TARGET_RATIO
    target = {"cell": ":".join(TARGET_CELL), "reference": ":".join(TARGET_REFERENCE), "cell_ms": t_cell * 1000,
              "reference_ms": t_ref * 1000, "ratio": ratio, "limit": limit, "met": ratio <= limit}
    log(f"target: RS-ATSS / Focal-ATSS = {ratio:.2f} (limit {limit}) {'met' if ratio <= limit else 'NOT met'}")
    _write(Path(out_prefix), rows, target, repeats=repeats, warmup=warmup, threads=threads, batch=TINY_BATCH,
           size=TINY_SIZE)
    return {"rows": rows, "target": target}


def _write(prefix: Path, rows: list[StepTime], target: dict, **setup) -> None:
    import torch

    from harness.detectors.grid import DETECTORS
    from harness.files import prefixed, write_csv_atomic, write_text_atomic

    write_csv_atomic(prefixed(prefix, ".csv"), ["detector", "loss", "family", "median_ms", "min_ms", "steps"],
                     [[r.detector, r.loss, r.family, f"{r.median_s * 1000:.2f}", f"{r.min_s * 1000:.2f}", r.steps]
                      for r in rows])

    losses = list(dict.fromkeys(r.loss for r in rows))
    by = {(r.detector, r.loss): r for r in rows}
    lines = [
        "# Training-step time per cell (tiny profile, CPU)",
        "",
        f"Median of {setup['repeats']} steps after {setup['warmup']} warm-up steps; a step = preprocessing, "
        f"forward, loss, backward and SGD update of a batch of {setup['batch']} synthetic "
        f"{setup['size']}x{setup['size']} images; {setup['threads']} torch thread(s); "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}. Written by "
        "`make bench-steps` (`harness bench-steps`).",
        "",
        "| detector | " + " | ".join(losses) + " |",
        "|---|" + "---:|" * len(losses),
    ]
    for det in dict.fromkeys(r.detector for r in rows):
        cells = [f"{by[(det, loss)].median_s * 1000:.0f} ms" if (det, loss) in by else "-" for loss in losses]
        lines.append(f"| {DETECTORS[det].title} | " + " | ".join(cells) + " |")
    verdict = "met" if target["met"] else "**not met**"
    lines += [
        "",
        "## Target",
        "",
        f"RS-ATSS step / Focal-ATSS step, measured in alternation: {target['cell_ms']:.0f} ms / "
        f"{target['reference_ms']:.0f} ms = **{target['ratio']:.2f}x** (target at most {target['limit']}x; the RS "
        f"paper reports about 1.5x on GPUs): {verdict}.",
        "",
        "RS-ATSS has 3 anchors per location and no centerness branch; Focal-ATSS is mmdet's ATSS (1 anchor, "
        "centerness). Timings on a shared CPU move with its load: compare within one file.",
        "",
    ]
    write_text_atomic(prefixed(prefix, ".md"), "\n".join(lines))
