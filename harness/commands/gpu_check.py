"""The prepared GPU check: trains each of the 35 cells (ResNet-50 FPN, 20 steps of 8 generated 512-pixel
images) and predicts, with every compiled mmcv kernel forbidden, then times a training step of each
detector's baseline loss and of RS at paper scale (2 images of 1333 x 800) against the RS / baseline <=
1.15 target. Writes results/bench/gpu.md. Made for one GPU (under 8 minutes); `--device cpu --quick`
runs the same code on this machine's CPU in seconds (tiny profile, 2 steps, small images). On a machine
without a package registry, scripts/gpu-check.sh sets up the environment from a carried wheelhouse
(scripts/gpu-wheels.sh) and runs this. Exits 1 when a cell fails or (full check only) a ratio misses
the target.
"""

from __future__ import annotations

NAME = "gpu-check"
HELP = "train + predict every cell on a GPU and time baseline vs RS steps; writes results/bench/gpu.md"


def add_arguments(parser) -> None:
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda when torch sees a GPU; cpu only with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="the code path in seconds: tiny profile, 2 steps of 2 small images, tiny timings")
    parser.add_argument("--only", action="append", default=None, metavar="DETECTOR:LOSS",
                        help="only these cells (and their detectors' timings)")
    parser.add_argument("--iterations", type=int, default=None, help="training steps per cell (default 20; quick 2)")
    parser.add_argument("--out", default=None,
                        help="report prefix (default results/bench/gpu; with --quick results/bench/gpu_quick)")


def run(args) -> int:
    from harness.commands import UsageError, check_out_prefix
    from harness.commands.cells import parse_cells

    cells = parse_cells(args.only)
    if args.iterations is not None and args.iterations < 1:
        raise UsageError("--iterations must be at least 1")
    out = check_out_prefix(args.out or ("results/bench/gpu_quick" if args.quick else "results/bench/gpu"),
                           given=args.out is not None, suffixes=(".md",))
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        raise UsageError("torch sees no GPU here: run on a GPU node, or check the code path with --device cpu --quick")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device}: {exc}") from None
    if dev.type == "cpu" and not args.quick:
        raise UsageError("the full check on a CPU takes hours: add --quick (tiny profile) or run on a GPU")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch {torch.__version__} cannot use a GPU here (see `harness doctor`)")
    import warnings

    from harness.gpu_check import TARGET_RATIO, run_gpu_check, settings_for

    settings = settings_for(args.quick, iterations=args.iterations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_gpu_check(device, settings, out, cells=cells, log=lambda s: print(s, flush=True))
    failed = [c for c in result["cells"] if not c.ok]
    untimed = [t for t in result["timings"] if t.problem]
    print(f"{len(result['cells']) - len(failed)} of {len(result['cells'])} cells train and predict; "
          f"{len(result['timings']) - len(untimed)} of {len(result['timings'])} detectors timed; "
          f"{result['seconds'] / 60:.1f} min; wrote {out}.md")
    if result["target_met"] is not None:
        missed = [t.detector for t in result["timings"] if not t.problem and t.ratio > TARGET_RATIO]
        print(f"target RS / baseline <= {TARGET_RATIO}: " + ("met" if not missed else f"NOT met for {', '.join(missed)}"))
    return 0 if result["ok"] and result["target_met"] is not False else 1
