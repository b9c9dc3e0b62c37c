"""List the detector x loss cells: head family, learning rate at total batch, schedule and recipe source.

`--profile paper` (default) shows the COCO-scale recipes; `--profile tiny` the CPU profile's lr and batch.
`--changes DETECTOR LOSS` prints how that cell's config differs from the one mmdet ships (each change
with why). `--recipe DETECTOR LOSS` prints the cell's official recipe at the paper profile, every value
with the release and config file that sets it (`--backbone-init scratch|PATH` for another start), and its batch
and lr on fewer GPUs (accumulated to the recipe's total batch) and at another total batch (lr scaled linearly). `--load MODULE` imports an external loss module first; `--losses` picks the loss columns
(default: the five of the comparison). `--json` prints machine-readable output.
"""

from __future__ import annotations

import json

NAME = "cells"
HELP = "list the detector x loss cells and their recipes (or one cell's config changes)"


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default="paper", help="paper (COCO scale, default) or tiny (CPU)")
    parser.add_argument("--losses", nargs="+", metavar="LOSS", help="losses to cross (default: ce focal ap alrp rs)")
    parser.add_argument("--changes", nargs=2, metavar=("DETECTOR", "LOSS"), help="print one cell's config changes")
    parser.add_argument("--recipe", nargs=2, metavar=("DETECTOR", "LOSS"),
                        help="print one cell's official recipe, each value with its source")
    parser.add_argument("--backbone-init", default=None, metavar="INIT",
                        help="imagenet | scratch | PATH (default: the profile's: paper imagenet, tiny scratch)")
    parser.add_argument("--load", action="append", default=[], metavar="MODULE", help="import an external loss module first")
    parser.add_argument("--json", action="store_true", help="print JSON")


def validate_cell(detector: str, loss: str, loaded: list[str] | None = None) -> None:
    """UsageError naming the valid choices for an unknown detector or loss; ``loaded``: the command's
    ``--load`` modules (None where it takes no ``--load``), for the hint to load a loss of one's own."""
    from harness.commands import UsageError, unknown_loss
    from harness.detectors import detector_names
    from harness.losses import loss_names

    if detector not in detector_names():
        raise UsageError(f"unknown detector {detector!r}; valid: {', '.join(detector_names())}")
    if loss not in loss_names():
        raise unknown_loss(loss, loaded)


def parse_cells(items) -> list[tuple[str, str]] | None:
    """``--only DETECTOR:LOSS`` items as validated cells (None when there are none)."""
    from harness.commands import UsageError

    if not items:
        return None
    cells = []
    for item in items:
        if item.count(":") != 1:
            raise UsageError(f"--only {item}: expected DETECTOR:LOSS, e.g. atss:rs")
        det, loss = item.split(":")
        validate_cell(det, loss)
        cells.append((det, loss))
    return cells


def load_modules(targets) -> None:
    from harness.commands import load_loss_modules

    load_loss_modules(targets)


def run(args) -> int:
    from harness.commands import UsageError
    from harness.detectors import LOSS_NAMES, PROFILES, describe_cell, detector_names

    load_modules(args.load)
    if args.profile not in PROFILES:
        raise UsageError(f"unknown profile {args.profile!r}; valid: {', '.join(PROFILES)}")
    if args.recipe:
        detector, loss = args.recipe
        validate_cell(detector, loss, args.load)
        from harness.detectors.grid import recipe_lines

        from harness.experiments.batch import rule_lines

        init = args.backbone_init or "imagenet"
        print("\n".join(recipe_lines(detector, loss, init)[:2] + rule_lines(detector, loss)
                        + recipe_lines(detector, loss, init)[2:]))
        return 0
    if args.changes:
        detector, loss = args.changes
        validate_cell(detector, loss, args.load)
        from harness.detectors.builder import DELETE, cell_changes

        try:
            changes = cell_changes(detector, loss, profile=args.profile, backbone_init=args.backbone_init)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print(json.dumps([{"path": c.path, "deleted": c.value is DELETE,
                               "value": None if c.value is DELETE else c.value, "why": c.why} for c in changes],
                             indent=2, default=repr))
            return 0
        print(f"{detector} x {loss} ({args.profile}): mmdet's config plus {len(changes)} changes")
        for change in changes:
            print("  " + change.describe())
        return 0
    losses = tuple(args.losses) if args.losses else LOSS_NAMES
    for loss in losses:
        validate_cell(detector_names()[0], loss, args.load)
    rows = []
    for det in detector_names():
        for loss in losses:
            info = describe_cell(det, loss).as_dict()
            if args.profile == "tiny":
                from harness.detectors.builder import profile_recipe

                info.update(profile_recipe(det, loss, "tiny"))
            rows.append(info)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} cells ({args.profile} profile)")
    print(f"{'detector':<13} {'loss':<6} {'heads':<9} {'lr':>9} {'batch':>9} {'schedule':<28} source")
    for r in rows:
        batch = f"{r['total_batch']} ({r['gpus']}x{r['batch_per_gpu']})"
        print(f"{r['detector']:<13} {r['loss']:<6} {r['family']:<9} {r['lr']:>9g} {batch:>9} {r['schedule']:<28} "
              f"{r['source']}")
    return 0
