"""Train and test cells of the embedded default with a timer on each part of the model, and write where a
training iteration's and a test image's time goes: `<out>.md` and `<out>.csv` (harness.bench.phases).
"""

from __future__ import annotations

NAME = "bench-phases"
HELP = "where a grid run's time goes, part by part (tiny profile, CPU); writes results/bench/phases.md"
DEFAULT_CELLS = ["faster_rcnn:rs", "cascade_rcnn:rs", "mask_rcnn:rs", "yolact:rs", "atss:rs", "paa:rs", "solov2:rs"]


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/bench/phases", help="output prefix (.md and .csv)")
    parser.add_argument("--only", action="append", default=None, metavar="DETECTOR:LOSS",
                        help=f"only these cells (default: {' '.join(DEFAULT_CELLS)})")
    from harness.experiments import DEFAULT_SPEC_NAME

    parser.add_argument("--spec", default=None, help="the spec whose runs are timed, each cell's first seed "
                        f"(default: the harness checkout's {DEFAULT_SPEC_NAME}, wherever this runs from)")
    parser.add_argument("--max-iters", type=int, default=None, metavar="N",
                        help="at most N training iterations an epoch (default: the spec's schedule)")


def run(args) -> int:
    from pathlib import Path

    from harness.commands import UsageError, check_out_prefix
    from harness.commands.cells import parse_cells
    from harness.experiments.spec import SpecError, load_spec

    if args.max_iters is not None and args.max_iters < 1:
        raise UsageError("--max-iters must be at least 1")
    check_out_prefix(args.out)
    from harness.bench.phases import profile_run, run_log, write_report
    from harness.experiments import default_spec

    spec_path = args.spec or default_spec()
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    cells = parse_cells(args.only or DEFAULT_CELLS)
    first: dict = {}  # each cell's first run (its first seed)
    for r in spec.runs():
        first.setdefault((r.detector, r.loss), r)
    missing = [f"{d}:{lo}" for d, lo in cells if (d, lo) not in first]
    if missing:
        raise UsageError(f"{spec_path} has no run of {', '.join(missing)}; pick cells the spec runs")
    several = [f"{d}:{lo} trains in {first[(d, lo)].world_size} processes" for d, lo in cells
               if first[(d, lo)].world_size > 1]
    if several:
        raise UsageError(f"{spec_path}: {'; '.join(several)}; bench-phases times a run in its own single process "
                         "(use a spec whose runs have one GPU or task each)")
    import dataclasses
    import shutil
    import sys
    import tempfile
    import warnings

    from harness.detectors.check import quiet_mmengine

    results = []
    with warnings.catch_warnings(), quiet_mmengine(), tempfile.TemporaryDirectory(prefix="harness-phases-") as tmp:
        warnings.simplefilter("ignore")
        for det, loss in cells:
            run = first[(det, loss)]
            if args.max_iters:
                run = dataclasses.replace(run, schedule={**run.schedule, "max_iters_per_epoch": args.max_iters})
            try:
                cell = profile_run(run, Path(tmp))
            except Exception as exc:  # the run's own error: its log is kept beside the report's prefix
                log = Path(f"{args.out}.{det}-{loss}.log")
                log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_log(run, Path(tmp)), log)
                print(f"{det}:{loss} failed: {type(exc).__name__}: {exc} (its log: {log})", file=sys.stderr)
                return 1
            results.append(cell)
            top = cell.train[0][2], cell.test[0][2]
            print(f"{det:<13} {loss:<6} {cell.iterations} iterations of {top[0]:.1f} ms, "
                  f"{cell.test_images} test images of {top[1]:.1f} ms", flush=True)
    write_report(Path(args.out), results, spec_path)
    print(f"wrote {args.out}.md and {args.out}.csv")
    return 0
