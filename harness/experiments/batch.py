"""A run's batch and learning rate beside its recipe's: processes × images a process × accumulation = total batch.

A cell's recipe trains ``processes`` processes of ``per_process`` images each, one optimizer step per
iteration (:func:`harness.detectors.builder.profile_recipe`: at the paper profile the COCO recipe's total
batch on the grid's 4 GPUs, at the tiny profile 4 images on one process). A run may have fewer processes.
Its schedule's ``accumulate`` says how it keeps the recipe:

* ``auto`` (the default): the images a process stay the recipe's (or the spec's ``batch_per_gpu``), and the
  run accumulates the gradients of ``recipe total / (processes × images a process)`` iterations into one
  optimizer step (mmengine's ``accumulative_counts``), so the total batch, the learning rate and the
  schedule in optimizer steps are the recipe's. The ranking losses still rank one process's images per
  call (the ranking set) and BatchNorm normalises over them. Where the recipe's total batch is not a
  multiple of processes × images a process, ``auto`` is refused: give a number.
* a number ``N``: that many iterations per optimizer step, whatever the total batch becomes.

Learning rate, one rule per case (``lr_rule``): ``recipe`` where the run's total batch is the recipe's
(accumulated or not); ``linear`` where the run changes its total batch (an explicit ``accumulate`` or
``batch_per_gpu`` that does not reach it): the recipe's lr × run total / recipe total, mmdet's
``auto_scale_lr`` rule; ``spec`` where the spec gives ``schedule.lr``, used as it is.

Standard library only (the recipes are data): the spec loader, the dry run, the run's config builder and
``harness cells`` all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

AUTO = "auto"
LR_RULES = ("recipe", "linear", "spec")


class BatchError(ValueError):
    """A batch layout that cannot be (``accumulate: auto`` where the recipe's total batch does not split)."""


@dataclass(frozen=True)
class Layout:
    """``processes`` × ``per_process`` images × ``accumulate`` iterations per optimizer step, at ``lr``."""

    processes: int
    per_process: int
    accumulate: int
    lr: float

    @property
    def total(self) -> int:
        """Images per optimizer step."""
        return self.processes * self.per_process * self.accumulate

    def text(self) -> str:
        return f"{self.processes} proc x {self.per_process} img x {self.accumulate} accum = {self.total}, lr {self.lr:g}"


@dataclass(frozen=True)
class RunBatch:
    """A run's layout beside its recipe's, and the rule its lr comes from (see the module docstring)."""

    run: Layout
    recipe: Layout
    lr_rule: str

    @property
    def differs(self) -> bool:
        """Whether the run trains another total batch or another number of images a process than its recipe
        (its results may differ for that alone: the ranking losses depend on both, RankSortLoss#13)."""
        return self.run.total != self.recipe.total or self.run.per_process != self.recipe.per_process

    def line(self) -> str:
        """``processes x images a process x accumulation = total batch, lr`` of the run, then the recipe's."""
        rule = {"recipe": "", "linear": " (scaled linearly)", "spec": " (the spec's)"}[self.lr_rule]
        return f"{self.run.text()}{rule} (recipe {self.recipe.text()})"

    def provenance(self) -> dict:
        """What a run's row records of its batch (``effective_batch`` is the total; lr and recipe beside)."""
        return {"processes": self.run.processes, "batch_per_process": self.run.per_process,
                "accumulate": self.run.accumulate, "effective_batch": self.run.total, "lr": self.run.lr,
                "lr_rule": self.lr_rule, "recipe_processes": self.recipe.processes,
                "recipe_batch_per_process": self.recipe.per_process, "recipe_batch": self.recipe.total,
                "recipe_lr": self.recipe.lr, "batch_differs": self.differs}


def recipe_layout(detector: str, loss: str, profile: str) -> Layout:
    """The recipe's layout of a cell at ``profile`` (no accumulation: one optimizer step an iteration)."""
    from harness.detectors.builder import profile_recipe

    r = profile_recipe(detector, loss, profile)
    return Layout(processes=r["gpus"], per_process=r["batch_per_gpu"], accumulate=1, lr=r["lr"])


def resolve_accumulate(value: Any, recipe_total: int, processes: int, per_process: int) -> int:
    """Iterations per optimizer step: a number as given; ``auto`` (or None) the recipe's total batch over
    processes × images a process, which must divide it (:class:`BatchError` otherwise)."""
    if value is None or value == AUTO:
        step = processes * per_process
        if recipe_total % step:
            if recipe_total % processes == 0:
                fits = [b for b in range(1, recipe_total // processes + 1) if (recipe_total // processes) % b == 0]
                keep = (f", or batch_per_gpu to one of {', '.join(map(str, fits))} (the recipe's total batch kept, "
                        f"{processes} process(es) x that x accumulation)")
            else:
                keep = (f"; no batch_per_gpu keeps the recipe's total batch on {processes} process(es): a number of "
                        f"GPUs that divides {recipe_total} does (gpus_per_run / tasks_per_run)")
            raise BatchError(
                f"accumulate auto: the recipe's total batch {recipe_total} is not a multiple of {processes} "
                f"process(es) x {per_process} images = {step}; set schedule.accumulate to a number (the total batch "
                f"becomes {step} x N and the lr is scaled linearly from the recipe's){keep}")
        return recipe_total // step
    return int(value)


def run_batch(detector: str, loss: str, profile: str, processes: int, schedule: Mapping[str, Any]) -> RunBatch:
    """The layout and lr a run of ``processes`` processes and ``schedule`` trains with, beside its recipe's."""
    recipe = recipe_layout(detector, loss, profile)
    per_process = schedule.get("batch_per_gpu") or recipe.per_process
    accumulate = resolve_accumulate(schedule.get("accumulate"), recipe.total, processes, per_process)
    total = processes * per_process * accumulate
    if schedule.get("lr"):
        lr, rule = float(schedule["lr"]), "spec"
    elif total == recipe.total:
        lr, rule = recipe.lr, "recipe"
    else:
        lr, rule = round(recipe.lr * total / recipe.total, 10), "linear"
    return RunBatch(Layout(processes, per_process, accumulate, lr), recipe, rule)


def rule_lines(detector: str, loss: str, profile: str = "paper") -> list[str]:
    """Both lr rules on a cell's recipe (``harness cells --recipe``): fewer processes accumulating to the
    recipe's total batch at its lr, and a total batch changed on purpose at the lr scaled linearly."""
    recipe = recipe_layout(detector, loss, profile)
    lines = [f"  batch and lr (schedule.accumulate; processes x images a process x accumulation = total batch):",
             f"    recipe: {recipe.text()}"]
    for processes in sorted({p for p in (recipe.processes // 2, 1) if p >= 1 and recipe.total % p == 0}, reverse=True):
        if processes == recipe.processes or recipe.total % (processes * recipe.per_process):
            continue
        b = run_batch(detector, loss, profile, processes, {})
        lines.append(f"    {processes} process(es), accumulate auto: {b.run.text()}  (the recipe's total batch, lr and "
                     f"schedule in optimizer steps; each process ranks and normalises its {b.run.per_process} images)")
    doubled = run_batch(detector, loss, profile, recipe.processes,
                        {"batch_per_gpu": recipe.per_process * 2, "accumulate": 1})
    lines.append(f"    another total batch on purpose, e.g. batch_per_gpu {recipe.per_process * 2}, accumulate 1: "
                 f"{doubled.run.text()}  (lr scaled linearly: {recipe.lr:g} x {doubled.run.total} / {recipe.total}, "
                 f"mmdet's auto_scale_lr rule)")
    return lines


__all__ = ["AUTO", "BatchError", "LR_RULES", "Layout", "RunBatch", "recipe_layout", "resolve_accumulate", "rule_lines",
           "run_batch"]
