"""The prepared GPU check (``harness gpu-check``; ``scripts/gpu-check.sh`` on a machine without a package
registry).

Two parts, on one device, with every compiled mmcv kernel made to raise
(:func:`harness.detectors.kernels.forbid_compiled_ops`), so a pass also proves that an mmcv built without
CUDA serves the GPU:

1. **Cells.** Each of the 35 cells (paper profile: ResNet-50 FPN, COCO's 80 classes, random weights
   instead of ImageNet's, nothing is downloaded) trains ``iterations`` steps on generated images (a
   batch of ``batch`` images of ``size`` pixels, ellipses with boxes and masks) with its optimizer,
   gradient clipping and the first steps of its warm-up, at its recipe's learning rate scaled to the
   batch, then predicts on the same batch. A cell passes when every logged loss of every step is finite
   and prediction returns finite boxes (masks for the mask detectors).
2. **Step time.** For each detector, its baseline loss and RS at paper scale (``paper_batch`` images of
   1333 x 800; YOLACT and SOLOv2-light at their configs' input sizes, :data:`INPUT_SIZE`): ``warmup``
   untimed steps each, then the median of the timed steps, the two models alternating so that both see the same device state. Target: RS step
   at most :data:`~harness.detectors.bench_steps.TARGET_RATIO` x the baseline's (as for bench-steps).

The report (``results/bench/gpu.md``) lists every cell with its outcome and the step times beside the
published ones. :data:`FULL` is the real check (under 8 minutes on one recent GPU); :data:`QUICK` runs
the same code on CPU in seconds at the tiny profile (``--device cpu --quick``).
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from harness.detectors.bench_steps import TARGET_RATIO

# The target (TARGET_RATIO) is bench-steps'; the published step times are experiments/paper_results.csv's.
PUBLISHED_RS_RATIO = 1.5  # the RS paper's release: RS at about 1.5 x its baseline
PAPER_SIZE = (800, 1333)  # (height, width)
# (height, width) of the detectors whose paper config trains at another input size: YOLACT at 550 x 550, SOLOv2-light
# at 768 x (352-512), timed at the middle scale
INPUT_SIZE = {"yolact": (550, 550), "solov2": (448, 768)}


def published_step_times() -> dict:
    """The published training-step times (s/iter): ``{'rs': {detector: s}, 'bucketed_rs': {...}, 'setup': how they
    were measured}``, from ``experiments/paper_results.csv`` (metric ``train_s_per_iter``, primary rows)."""
    from harness.results.paper import load_paper

    df = load_paper()
    df = df[(df["metric"] == "train_s_per_iter") & (df["primary"] == 1)]
    out = {loss: dict(zip(df.loc[df["loss"] == loss, "detector"], df.loc[df["loss"] == loss, "value"]))
           for loss in ("rs", "bucketed_rs")}
    out["setup"] = "; ".join(sorted({f"{notes} ({source})" for notes, source in zip(df["notes"], df["source"])}))
    return out


@dataclass(frozen=True)
class Settings:
    """What one check runs: the cells' part (``profile``, ``size``, ``batch``, ``iterations``) and the
    step-time part (``paper_size``, ``paper_batch``, ``warmup``, ``rounds`` x ``per_round`` timed steps)."""

    profile: str
    size: int
    batch: int
    iterations: int
    paper_size: tuple[int, int]
    paper_batch: int
    warmup: int
    rounds: int
    per_round: int
    objects: int = 4
    apply_target: bool = True  # the TARGET_RATIO target means something at scale on an accelerator only


FULL = Settings(profile="paper", size=512, batch=8, iterations=20, paper_size=PAPER_SIZE, paper_batch=2, warmup=5,
                rounds=5, per_round=2)
QUICK = Settings(profile="tiny", size=128, batch=2, iterations=2, paper_size=(96, 160), paper_batch=2, warmup=1,
                 rounds=2, per_round=1, objects=3, apply_target=False)


@dataclass
class CellOutcome:
    detector: str
    loss: str
    ok: bool = False
    steps: int = 0
    first_loss: float = math.nan
    last_loss: float = math.nan
    train_s: float = 0.0  # all training steps, model build excluded
    detections: list[int] = field(default_factory=list)
    problem: str = ""

    @property
    def outcome(self) -> str:
        return "ok" if self.ok else f"FAILED: {self.problem}"


@dataclass
class StepTiming:
    detector: str
    baseline: str
    size: tuple[int, int]
    baseline_s: float = math.nan
    rs_s: float = math.nan
    problem: str = ""  # why the detector could not be timed

    @property
    def ratio(self) -> float:
        return self.rs_s / self.baseline_s


def _device_module(device):
    """``torch.cuda`` for a CUDA device, ``torch.cpu`` for the CPU, ...: its synchronize / empty_cache."""
    import torch

    return getattr(torch, device.type)


def _synchronize(device) -> None:
    module = _device_module(device)
    if hasattr(module, "synchronize"):
        module.synchronize()


def _release(device) -> None:
    import gc

    gc.collect()
    module = _device_module(device)
    if hasattr(module, "empty_cache"):
        module.empty_cache()


def _without_downloads(node) -> None:
    """Drop every ``Pretrained`` ``init_cfg`` (the ImageNet backbone): the check starts from random
    weights and downloads nothing. The frozen stages and BatchNorm mode of the recipe stay."""
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            node["init_cfg"] = None
        for value in node.values():
            _without_downloads(value)
    elif isinstance(node, list):
        for value in node:
            _without_downloads(value)


def cell_config(detector: str, loss: str, profile: str, for_prediction: bool = False):
    """The cell's config at ``profile`` with random backbone weights; ``for_prediction``: score and mask
    thresholds 0, so that a briefly trained model's predictions are there to check (as in check-cell)."""
    from harness.detectors.builder import build_cell_config
    from harness.detectors.check import _zero_thresholds

    cfg = build_cell_config(detector, loss, profile=profile)
    model = cfg.model.to_dict()
    _without_downloads(model)
    if for_prediction and model.get("test_cfg") is not None:
        _zero_thresholds(model["test_cfg"])
    cfg.model = model
    return cfg


class Trainer:
    """A cell's model on ``device`` with its optimizer wrapper (clipping included), at its recipe's lr
    scaled linearly to ``batch`` images, following the recipe's iteration-based warm-up."""

    def __init__(self, cfg, device, batch: int, seed: int = 0):
        import torch
        from mmengine.optim import build_optim_wrapper

        from harness.detectors.check import build_model

        torch.manual_seed(seed)
        self.model = build_model(cfg).to(device)
        self.model.train()
        optim_cfg = copy.deepcopy(cfg.optim_wrapper.to_dict() if hasattr(cfg.optim_wrapper, "to_dict")
                                  else dict(cfg.optim_wrapper))
        optim_cfg["optimizer"]["lr"] *= batch / cfg.recipe["total_batch"]
        self.wrapper = build_optim_wrapper(self.model, optim_cfg)
        self.base_lrs = [group["lr"] for group in self.wrapper.optimizer.param_groups]
        warm = next((s for s in cfg.get("param_scheduler", []) or []
                     if s.get("type") == "LinearLR" and not s.get("by_epoch", True)), None)
        self.warmup = (float(warm.get("start_factor", 1.0)), int(warm.get("end", 0))) if warm else (1.0, 0)
        self.iteration = 0

    def _set_lr(self) -> None:
        start, end = self.warmup
        factor = start + (1 - start) * min(self.iteration, end) / end if end else 1.0
        for group, lr in zip(self.wrapper.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * factor

    def step(self, batch: dict) -> dict:
        """One training step (:func:`~harness.detectors.check.train_step`); returns mmengine's logged values
        as tensors (reading them with :meth:`values` waits for the device, which the timed steps do not)."""
        from harness.detectors.check import train_step

        self._set_lr()
        log_vars = train_step(self.model, batch, self.wrapper)
        self.iteration += 1
        return log_vars

    @staticmethod
    def values(log_vars) -> dict[str, float]:
        return {k: float(v.detach()) if hasattr(v, "detach") else float(v) for k, v in log_vars.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def train_and_predict(detector: str, loss: str, device, settings: Settings, batch: dict) -> CellOutcome:
    """Part 1 for one cell: ``settings.iterations`` steps, then a prediction; never raises."""
    import torch

    from harness.detectors.grid import get_detector
    from harness.detectors.kernels import forbid_compiled_ops

    out = CellOutcome(detector, loss)
    trainer = None
    try:
        with forbid_compiled_ops():
            trainer = Trainer(cell_config(detector, loss, settings.profile, for_prediction=True), device,
                              settings.batch)
            start = time.perf_counter()
            for i in range(settings.iterations):
                values = trainer.values(trainer.step(batch))
                bad = {k: v for k, v in values.items() if not math.isfinite(v)}
                if bad:
                    out.problem = f"step {i + 1}: " + ", ".join(f"{k} = {v}" for k, v in bad.items())
                    return out
                if i == 0:
                    out.first_loss = values["loss"]
                out.last_loss = values["loss"]
                out.steps = i + 1
            _synchronize(device)
            out.train_s = time.perf_counter() - start
            trainer.model.eval()
            with torch.no_grad():
                preds = trainer.model.test_step(copy.deepcopy(batch))
        wants_masks = "segm" in get_detector(detector).outputs
        for i, sample in enumerate(preds):
            inst = sample.pred_instances
            out.detections.append(len(inst))
            boxes = getattr(inst, "bboxes", None)
            if boxes is not None and not bool(torch.isfinite(boxes).all()):
                out.problem = f"prediction: non-finite boxes for image {i}"
                return out
            if wants_masks and (getattr(inst, "masks", None) is None or inst.masks.shape[0] != len(inst)):
                out.problem = f"prediction: no masks for image {i}"
                return out
        if not any(out.detections):
            out.problem = "prediction: no instances at all"
            return out
        out.ok = True
        return out
    except Exception as exc:  # one failing cell must not hide the others
        where = traceback.extract_tb(exc.__traceback__)[-1]
        out.problem = f"{_first_line(exc)} (at {Path(where.filename).name}:{where.lineno})"
        return out
    finally:
        del trainer
        _release(device)


def time_detector(detector: str, device, settings: Settings, log: Callable[[str], None] = print) -> StepTiming:
    """Part 2 for one detector: median step times of its baseline loss and of RS, in alternation."""
    from harness.detectors.check import synthetic_batch
    from harness.detectors.grid import get_detector
    from harness.detectors.kernels import forbid_compiled_ops

    baseline = get_detector(detector).baseline_loss
    size = INPUT_SIZE.get(detector, settings.paper_size) if settings.profile == "paper" else settings.paper_size
    batch = synthetic_batch(num_images=settings.paper_batch, size=size, num_classes=80, objects=settings.objects)
    trainers = []
    try:
        with forbid_compiled_ops():
            trainers = [Trainer(cell_config(detector, loss, settings.profile), device, settings.paper_batch)
                        for loss in (baseline, "rs")]

            def timed(trainer) -> float:
                _synchronize(device)
                start = time.perf_counter()
                trainer.step(batch)
                _synchronize(device)
                return time.perf_counter() - start

            for _ in range(settings.warmup):
                for trainer in trainers:
                    timed(trainer)
            times: list[list[float]] = [[], []]
            for _ in range(settings.rounds):
                for k, trainer in enumerate(trainers):
                    times[k] += [timed(trainer) for _ in range(settings.per_round)]
    finally:
        del trainers
        _release(device)
    timing = StepTiming(detector, baseline, size, statistics.median(times[0]), statistics.median(times[1]))
    log(f"  {detector:<13} {baseline:<5} {timing.baseline_s:.3f} s  rs {timing.rs_s:.3f} s  ratio {timing.ratio:.2f}")
    return timing


def run_gpu_check(device: str, settings: Settings, out: str | Path, cells: list[tuple[str, str]] | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Both parts on ``device``; writes ``<out>.md``. Returns ``{'cells', 'timings', 'ok', 'target_met',
    'seconds'}``: ``ok`` when every cell passed and every detector was timed, ``target_met`` when every
    RS / baseline ratio is at most :data:`TARGET_RATIO` (None when the settings do not apply it)."""
    import torch

    from harness.detectors import cells as all_cells

    dev = torch.device(device)
    saved_threads = torch.get_num_threads()
    if dev.type == "cpu":  # one thread: several spin against each other on a shared CPU (see check_cell)
        torch.set_num_threads(1)
    try:
        return _run(dev, settings, Path(out), cells or all_cells(), log)
    finally:
        torch.set_num_threads(saved_threads)


def _run(dev, settings: Settings, out: Path, chosen: list[tuple[str, str]], log) -> dict:
    from harness.detectors.check import synthetic_batch
    from harness.detectors.grid import get_detector

    start = time.perf_counter()
    log(f"gpu-check on {describe_device(dev)}: {len(chosen)} cell(s), {settings.iterations} steps of "
        f"{settings.batch} x {settings.size}px at the {settings.profile} profile")
    batch = synthetic_batch(num_images=settings.batch, size=settings.size, num_classes=80, objects=settings.objects)
    outcomes = []
    for det, loss in chosen:
        outcome = train_and_predict(det, loss, dev, settings, batch)
        outcomes.append(outcome)
        log(f"  {det:<13} {loss:<6} {outcome.outcome}  (loss {outcome.first_loss:.4g} -> {outcome.last_loss:.4g}, "
            f"{outcome.train_s:.1f} s)")
    detectors = list(dict.fromkeys(d for d, _ in chosen))
    log(f"step time: baseline vs RS, {settings.paper_batch} images, {settings.profile} profile")
    timings = []
    for det in detectors:
        try:
            timings.append(time_detector(det, dev, settings, log))
        except Exception as exc:  # e.g. out of memory: the other detectors are still timed
            timings.append(StepTiming(det, get_detector(det).baseline_loss, settings.paper_size,
                                      problem=_first_line(exc)))
            log(f"  {det:<13} FAILED: {timings[-1].problem}")
    seconds = time.perf_counter() - start
    ok = all(o.ok for o in outcomes) and not any(t.problem for t in timings)
    target_met = all(t.ratio <= TARGET_RATIO for t in timings) if settings.apply_target else None
    write_report(out, outcomes, timings, settings, dev, seconds)
    return {"cells": outcomes, "timings": timings, "ok": ok, "target_met": target_met, "seconds": seconds}


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)} (cuda:{index})"
    return f"{device.type} ({platform.processor() or platform.machine()})"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(prefix: Path, outcomes: list[CellOutcome], timings: list[StepTiming], settings: Settings, device,
                 seconds: float) -> Path:
    """``<prefix>.md``: the device and versions, every cell with its outcome, the step times beside the
    published ones."""
    import mmcv
    import mmdet
    import torch

    from harness.detectors.grid import DETECTORS
    from harness.files import prefixed, write_text_atomic

    passed = sum(o.ok for o in outcomes)
    published = published_step_times()
    h, w = settings.paper_size
    lines = [
        "# GPU check",
        "",
        f"Device {describe_device(device)}; torch {torch.__version__} (CUDA {torch.version.cuda}), mmcv "
        f"{mmcv.__version__} (compiled kernels forbidden: NMS and RoIAlign on torchvision's), mmdet "
        f"{mmdet.__version__}; {settings.profile} profile, random backbone weights. Written by `harness gpu-check`"
        f" in {seconds / 60:.1f} min.",
        "",
        f"## Cells: {passed} of {len(outcomes)} train and predict",
        "",
        f"{settings.iterations} training steps of {settings.batch} generated {settings.size} x {settings.size} "
        "images (the recipe's optimizer, clipping and warm-up, lr scaled to the batch), then a prediction on "
        "the same images.",
        "",
        "| detector | loss | outcome | loss at step 1 | loss at the last step | training s | detections |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for o in outcomes:
        lines.append(f"| {DETECTORS[o.detector].title} | {o.loss} | {o.outcome} | {_fmt(o.first_loss, 4)} | "
                     f"{_fmt(o.last_loss, 4)} | {o.train_s:.1f} | {o.detections or '-'} |")
    lines += [
        "",
        "## Training-step time: baseline loss vs RS",
        "",
        f"Median of {settings.rounds * settings.per_round} timed steps after {settings.warmup} warm-up steps, the "
        f"two models alternating; {settings.paper_batch} images of {w} x {h} ("
        + ", ".join(f"{DETECTORS[d].title} at {dw} x {dh}" for d, (dh, dw) in INPUT_SIZE.items())
        + " at the paper profile, their configs' input sizes); one device. Published: "
        f"RS s/iter of the RS implementation and of Bucketed RS, {published['setup']} (not the same setting: "
        f"compare ratios, not seconds); the RS release reports RS at about {PUBLISHED_RS_RATIO} x its baseline.",
        "",
        "| detector | baseline | baseline s/iter | RS s/iter | RS / baseline | target <= "
        f"{TARGET_RATIO} | published RS s/iter | published Bucketed RS s/iter |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for t in timings:
        if t.problem:
            lines.append(f"| {DETECTORS[t.detector].title} | {t.baseline} | FAILED: {t.problem} | | | | | |")
            continue
        verdict = ("met" if t.ratio <= TARGET_RATIO else "**not met**") if settings.apply_target else "n/a (quick)"
        lines.append(f"| {DETECTORS[t.detector].title} | {t.baseline} | {t.baseline_s:.3f} | {t.rs_s:.3f} | "
                     f"{t.ratio:.2f} | {verdict} | {_fmt(published['rs'].get(t.detector), 2)} | "
                     f"{_fmt(published['bucketed_rs'].get(t.detector), 2)} |")
    lines.append("")
    return write_text_atomic(prefixed(prefix, ".md"), "\n".join(lines))


def settings_for(quick: bool, **overrides) -> Settings:
    """:data:`QUICK` or :data:`FULL` with ``overrides`` (None values ignored)."""
    base = QUICK if quick else FULL
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
