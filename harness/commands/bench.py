"""Run a benchmark and write its tables under results/bench/.

`harness bench losses` times forward + backward of RS, aLRP, AP, their Bucketed comparators (with
their measured error against the exact losses), torchvision's Focal and the plain per-positive RS loop
for N in {1e4, 1e5, 1e6, 4e6} logits and P in {1e2, 1e3, 1e4} positives (CPU, and CUDA when present),
and checks the speed targets; it takes about ten minutes on 2 cores (`--quick`: seconds).
"""

from __future__ import annotations

NAME = "bench"
HELP = "run a benchmark (losses) and write results/bench/<name>.md and .csv"


def add_arguments(parser) -> None:
    parser.add_argument("which", choices=["losses"], help="what to benchmark")
    parser.add_argument("--out", default=None, help="output prefix (default results/bench/<which>)")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"], help="device(s) (default: cpu, and cuda if present)")
    parser.add_argument("--quick", action="store_true", help="two small sizes only, for a smoke run")


def run(args) -> int:
    import torch

    from harness.commands import UsageError, check_out_prefix

    out = check_out_prefix(args.out or f"results/bench/{args.which}", given=args.out is not None)
    if args.device and "cuda" in args.device and not torch.cuda.is_available():
        raise UsageError("--device cuda given but no CUDA device is available; drop it or run on a GPU machine")
    from harness.bench import losses

    return losses.main(out, args.device, args.quick)
