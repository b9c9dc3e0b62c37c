"""Time one training step of every detector x loss cell at the tiny profile on this CPU and write
`<out>.md` and `<out>.csv` (median per cell; RS-ATSS vs Focal-ATSS against the 1.15x target).
Exits 1 when the target is not met.
"""

from __future__ import annotations

NAME = "bench-steps"
HELP = "median training-step time per cell (tiny profile, CPU); writes results/bench/steps.md"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results/bench/steps", help="output prefix (.md and .csv)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per cell (median)")
    parser.add_argument("--only", action="append", default=None, metavar="DETECTOR:LOSS", help="only these cells")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def run(args) -> int:
    from harness.commands import UsageError, check_out_prefix
    from harness.commands.cells import parse_cells

    if args.repeats < 1 or args.threads < 1:
        raise UsageError("--repeats and --threads must be at least 1")
    check_out_prefix(args.out)
    cells = parse_cells(args.only)
    import warnings

    from harness.detectors.bench_steps import run_step_benchmark

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_step_benchmark(args.out, repeats=args.repeats, cells=cells, threads=args.threads,
                                    log=lambda s: print(s, flush=True))
    print(f"wrote {args.out}.md and {args.out}.csv")
    return 0 if result["target"]["met"] else 1
