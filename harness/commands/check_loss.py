"""Run the generic checks on a registered loss: finite values and gradients, zero-positive safety,
NaN input rejection, speed beside Focal on the same logits, and one training step of every detector
with it (tiny profile, CPU). Exits 1 when a check fails.

`--load MODULE` imports an external loss module first; `--skip-detectors` runs the loss-level checks only.
"""

from __future__ import annotations

NAME = "check-loss"
HELP = "run the generic checks (values, edge cases, speed, one step per detector) on a registered loss"


def add_arguments(parser) -> None:
    parser.add_argument("name", help="a registered loss name (see `harness losses`)")
    parser.add_argument("--load", action="append", default=[], metavar="MODULE", help="import an external loss module first")
    parser.add_argument("--skip-detectors", action="store_true", help="skip the training step on each detector")
    parser.add_argument("--detector", action="append", default=None, help="only these detectors (repeatable)")


def run(args) -> int:
    from harness.commands import UsageError, load_loss_modules, unknown_loss
    from harness.losses import loss_names
    from harness.losses.checks import run_loss_checks

    from harness.detectors import check_cell, detector_names

    load_loss_modules(args.load)
    if args.name not in loss_names():
        raise unknown_loss(args.name, args.load)
    names = list(detector_names())
    for det in args.detector or []:  # before any check runs: they take minutes
        if det not in names:
            raise UsageError(f"unknown detector {det!r}; valid: {', '.join(names)}")
    failed = 0
    for result in run_loss_checks(args.name):
        failed += not result.ok
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.name:<14} {result.detail}", flush=True)
    if not args.skip_detectors:
        for det in args.detector or names:
            try:
                report = check_cell(det, args.name)
                ok, detail = True, report.summary() if hasattr(report, "summary") else str(report)
            except Exception as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} step:{det:<11} {detail}", flush=True)
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0
