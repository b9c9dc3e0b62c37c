"""What a spec's job arrays cost in GPU-hours, before anything is submitted (the dry run prints it).

Two figures per array and in total:

* **at most**: runs × GPUs × attempts × the time limit (hours). A run that reaches its limit requeues and
  resumes, up to :data:`harness.launch.submission.MAX_TIMEOUTS` times, so it may take 1 + MAX_TIMEOUTS
  attempts, each booking at most the limit: that is what the runs can book (one attempt's figure is said
  beside it). An attempt that a preemption cuts short is not counted by submitit against the cap and comes
  on top (the bound covers attempts that end at the limit); a run whose expected time needs more attempts
  than it may take stops unfinished, and the line says so (its expected figure then exceeds the bound);
* **expected**: runs × GPUs × iterations × seconds per iteration. Iterations: the schedule's epochs × the
  training images / the run's total batch (``max_iters_per_epoch`` caps an epoch); images: COCO train2017's
  117,266 with annotations (what mmdet trains on), LVIS v1 train's 100,170 (repeat-factor sampling
  repeats rare images: the expected figure counts each once), a synthetic set's own size. Seconds per
  iteration, per detector and loss, from (in order): ``harness gpu-check``'s measurements when
  ``results/bench/gpu.md`` holds a GPU's (marked *measured*; its steps of ``paper_batch`` images on one
  device, scaled to the run's images per process), the published times of ``experiments/paper_results.csv``
  (``train_s_per_iter`` at total batch 16 on 4 × A100, scaled to the run's images per process; marked with
  their source), the detector's published RS time for its other ranking losses (AP, aLRP; marked so);
  else no expected figure, and the total says how many runs it covers.

Standard library only; reads the CSV and the report when asked.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from harness.experiments.spec import RunSpec
from harness.launch.submission import MAX_TIMEOUTS

REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_CSV = REPO_ROOT / "experiments" / "paper_results.csv"
GPU_REPORT = REPO_ROOT / "results" / "bench" / "gpu.md"

#: Training images per epoch of the real datasets (mmdet drops images without annotations).
TRAIN_IMAGES = {"coco": 117_266, "lvis": 100_170}
#: The published times' setting: total batch 16 = 4 GPUs × 4 images.
PUBLISHED_IMAGES_PER_GPU = 4
RANKING_LOSSES = ("ap", "alrp", "rs")
#: Attempts a run may take: the first and one per requeue at its time limit.
ATTEMPTS = 1 + MAX_TIMEOUTS


@dataclass(frozen=True)
class StepTime:
    seconds: float  # per iteration at the run's images per process
    source: str  # where the figure comes from, said in the plan


@dataclass(frozen=True)
class ArrayCost:
    runs: int
    attempt_gpu_h: float  # runs × GPUs × the time limit: one attempt of each run
    expected_gpu_h: float | None  # over the runs with a step time
    covered: int  # runs with a step time
    sources: tuple[str, ...]
    longest_run_gpu_h: float = 0.0  # the largest expected figure of one run (0 when none is known)

    @property
    def upper_gpu_h(self) -> float:
        """What the runs can book: every attempt each may take, at most the time limit each."""
        return self.attempt_gpu_h * ATTEMPTS


def _published(csv_path: Path) -> dict[tuple[str, str, str], tuple[float, str]]:
    out = {}
    try:
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row["metric"] == "train_s_per_iter" and row.get("primary", "1") == "1":
                    out[(row["dataset"], row["detector"], row["loss"])] = (float(row["value"]), row["source"])
    except OSError:
        pass
    return out


def _measured(report: Path) -> dict[tuple[str, str], tuple[float, int, str]]:
    """(detector, loss) → (seconds per step, images per step, device) from a GPU's ``harness gpu-check``
    report; empty when there is none or it was the CPU quick mode."""
    try:
        text = report.read_text()
    except OSError:
        return {}
    device = re.search(r"^Device (.+?);", text, re.M)
    batch = re.search(r"two models alternating; (\d+) images", text)
    if not device or not batch or "cpu" in device.group(1).lower() or "n/a (quick)" in text:
        return {}
    from harness.detectors.grid import DETECTORS

    titles = {d.title: name for name, d in DETECTORS.items()}
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in titles:
            try:
                baseline_s, rs_s = float(cells[2]), float(cells[3])
            except ValueError:
                continue
            det = titles[cells[0]]
            out[(det, cells[1])] = (baseline_s, int(batch.group(1)), device.group(1))
            out[(det, "rs")] = (rs_s, int(batch.group(1)), device.group(1))
    return out


class StepTimes:
    """Seconds per iteration of a run (see the module docstring for the order of the sources)."""

    def __init__(self, csv_path: Path = PAPER_CSV, report: Path = GPU_REPORT):
        self.published = _published(csv_path)
        self.measured = _measured(report)

    def for_run(self, run: RunSpec, images_per_process: int) -> StepTime | None:
        det, loss = run.detector, run.loss
        if (det, loss) in self.measured:
            seconds, images, device = self.measured[(det, loss)]
            return StepTime(seconds * images_per_process / images, f"measured by harness gpu-check on {device}")
        dataset = {"synthetic": "coco", "synthetic_lvis": "lvis"}.get(run.dataset["kind"], run.dataset["kind"])
        scale = images_per_process / PUBLISHED_IMAGES_PER_GPU
        if (dataset, det, loss) in self.published:
            seconds, source = self.published[(dataset, det, loss)]
            return StepTime(seconds * scale, f"published ({source})")
        if loss in RANKING_LOSSES and (dataset, det, "rs") in self.published:
            seconds, source = self.published[(dataset, det, "rs")]
            return StepTime(seconds * scale, f"published RS time for {loss} ({source})")
        return None


def images_per_process(run: RunSpec) -> int:
    """Images a process loads per iteration: the schedule's ``batch_per_gpu``, else the cell's recipe's."""
    if run.schedule.get("batch_per_gpu"):
        return run.schedule["batch_per_gpu"]
    if run.profile == "paper":
        from harness.detectors.grid import cell_recipe

        return cell_recipe(run.detector, run.loss).batch_per_gpu
    from harness.detectors.builder import TINY_BATCH

    return TINY_BATCH


def iterations(run: RunSpec) -> int | None:
    """Training iterations of a run (None when its dataset's size is not known here)."""
    kind = run.dataset["kind"]
    if kind in TRAIN_IMAGES:
        images = TRAIN_IMAGES[kind]
    elif kind.startswith("synthetic"):
        from harness.run.train import synthetic_params

        images = synthetic_params(dict(run.dataset)).train_images
    else:
        return None
    per_epoch = math.ceil(images / (images_per_process(run) * run.world_size))
    if run.schedule.get("max_iters_per_epoch"):
        per_epoch = min(per_epoch, run.schedule["max_iters_per_epoch"])
    epochs = run.schedule.get("epochs")
    if not epochs:
        from harness.detectors.grid import cell_recipe

        epochs = cell_recipe(run.detector, run.loss).epochs
    return epochs * per_epoch


def array_cost(runs: list[RunSpec], times: StepTimes) -> ArrayCost:
    gpus = runs[0].launch["gpus_per_run"]
    attempt = len(runs) * gpus * runs[0].launch["time_min"] / 60
    expected, covered, sources, longest = 0.0, 0, [], 0.0
    for run in runs:
        iters = iterations(run)
        step = times.for_run(run, images_per_process(run)) if iters else None
        if step is None:
            continue
        run_gpu_h = gpus * iters * step.seconds / 3600
        expected += run_gpu_h
        longest = max(longest, run_gpu_h)
        covered += 1
        if step.source not in sources:
            sources.append(step.source)
    return ArrayCost(len(runs), attempt, expected if covered else None, covered, tuple(sources), longest)


def describe(cost: ArrayCost, gpus: int, minutes: int) -> str:
    """One line: ``cost: at most ... GPU-h (... attempts ...); expected ...``."""
    line = (f"    cost: at most {cost.upper_gpu_h:,.0f} GPU-h ({cost.runs} run(s) x {gpus} GPU(s) x {ATTEMPTS} attempts "
            f"x {minutes / 60:.3g} h limit: the first and up to {MAX_TIMEOUTS} requeues; "
            f"{cost.attempt_gpu_h:,.0f} GPU-h an attempt)")
    if gpus == 0:
        return line + "; CPU only"
    if cost.expected_gpu_h is None:
        return line + "; expected: no step time known for these cells (published or measured)"
    part = "" if cost.covered == cost.runs else f" for {cost.covered} of {cost.runs} run(s)"
    line += f"; expected ~{cost.expected_gpu_h:,.0f} GPU-h{part} ({'; '.join(cost.sources)})"
    per_run_limit = gpus * minutes / 60
    if per_run_limit <= 0:
        return line
    attempts = math.ceil(cost.expected_gpu_h / cost.covered / per_run_limit)
    most = math.ceil(cost.longest_run_gpu_h / per_run_limit)
    if most > ATTEMPTS:
        line += (f"; a run needs up to ~{most} attempts of its {minutes} min limit, more than the {ATTEMPTS} it may "
                 f"take: it stops unfinished (so the expected figure exceeds what is booked); raise launch.time_min")
    elif attempts > 1:
        line += f"; a run needs ~{attempts} attempts of its {minutes} min limit (it requeues and resumes)"
    return line


def total_line(costs: Iterable[ArrayCost]) -> str:
    costs = list(costs)
    runs = sum(c.runs for c in costs)
    upper = sum(c.upper_gpu_h for c in costs)
    attempt = sum(c.attempt_gpu_h for c in costs)
    covered = sum(c.covered for c in costs)
    expected = sum(c.expected_gpu_h or 0.0 for c in costs)
    line = (f"  cost in all: at most {upper:,.0f} GPU-h by the time limits ({ATTEMPTS} attempts of each run; "
            f"{attempt:,.0f} GPU-h an attempt of each)")
    if covered:
        part = "" if covered == runs else f" for the {covered} of {runs} run(s) with a known step time"
        line += f"; expected ~{expected:,.0f} GPU-h{part}"
        if expected > upper:
            line += " (more than the bound: some runs need more attempts than they may take and stop unfinished)"
    return line
