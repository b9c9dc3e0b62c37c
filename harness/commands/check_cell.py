"""Build one cell at the tiny profile on CPU, run one training step and one inference step on a
synthetic in-memory batch, and print the loss components, the gradient reaching each classification
layer and the detections. Exits 1 when a check fails (a non-finite loss, no gradient at a
classification layer, no boxes or masks at inference), 2 for an unknown detector or loss.
"""

from __future__ import annotations

NAME = "check-cell"
HELP = "one training + one inference step of a cell (tiny profile, CPU); prints the loss components"


def add_arguments(parser) -> None:
    parser.add_argument("detector", help="detector name (see `harness cells`)")
    parser.add_argument("loss", help="registered loss name (see `harness losses`)")
    parser.add_argument("--load", action="append", default=[], metavar="MODULE", help="import an external loss module first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the synthetic batch")


def run(args) -> int:
    from harness.commands.cells import load_modules, validate_cell

    from harness.commands import UsageError

    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    load_modules(args.load)
    validate_cell(args.detector, args.loss, args.load)
    import warnings

    from harness.detectors.check import CellCheckFailed, check_cell

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            report = check_cell(args.detector, args.loss, seed=args.seed)
        except CellCheckFailed as exc:
            report = exc.report
    print(f"{args.detector} x {args.loss} (tiny profile, CPU): train step {report.train_s:.2f}s, "
          f"inference {report.infer_s:.2f}s")
    for name, value in report.losses.items():
        print(f"  {name:<16} {value:.6g}")
    for name, value in report.cls_grad_norms.items():
        print(f"  grad |{name}| = {value:.3e}")
    masks = f", masks per image {report.masks}" if report.masks is not None else ""
    print(f"  detections per image {report.detections}{masks}")
    if report.problems:
        for problem in report.problems:
            print(f"FAIL {problem}")
        return 1
    print("ok")
    return 0
