"""Run an experiment spec: submit its runs (SLURM, local or debug), skipping finished ones.

Validates the whole spec first (exit 2 on any problem). `--dry-run` prints the plan: runs to do, runs
already done, and the job arrays by resources. Without `--wait` it submits (SLURM) or starts a
background pool (local), writes results/<experiment>/manifest.json and returns; `--wait` blocks with
progress until the runs it placed (and those it found queued or running elsewhere) have ended, then
reports each one's own outcome. Reruns submit only runs without a `done` row (`--force` redoes them);
failed runs run again; a run queued or running anywhere (SLURM, a local pool, a live process) is never
submitted again. A stale run (done, but by other code: `harness status` says what changed) is left
alone unless `--rerun-stale`, which redoes it from scratch. `--only`, `--force` and `--rerun-stale`
reach every executor, the background pool too. Exit 1 when a
waited-for run failed (each listed with its reason), the wait timed out, or the background pool did
not start. `--rehearse` runs every run of the spec here on CPU, small, as it would run on the cluster
(recipe, pipelines, image scale, sampler, evaluator, a checkpoint resumed, its world size as gloo
processes) into results/<experiment>-rehearsal/, one line per run (ok or the failure, time, peak memory);
exit 1 when one failed. `--cluster`, `--partition`, `--account` override the spec's launch section (and
the profile's account). The same path runs `harness benchmark` (harness.launch.orchestrate).
"""

from __future__ import annotations

NAME = "run"
HELP = "run an experiment spec (experiments/*.yaml) on SLURM or this machine"


def add_launch_arguments(parser) -> None:
    """The options `run` and `benchmark` share: where runs execute and which of them."""
    parser.add_argument("--executor", choices=["auto", "slurm", "local", "debug"], default=None,
                        help="where runs execute (default: the spec's launch.executor, itself 'auto': slurm when a "
                             "SLURM controller answers, else local)")
    parser.add_argument("--force", action="store_true", help="redo runs that already have a done row")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="redo done runs whose fingerprint (config, harness code, loss modules, versions) differs "
                             "from what the current code builds (harness status shows them as stale)")
    parser.add_argument("--only", action="append", default=[], metavar="DETECTOR[:LOSS]",
                        help="restrict to some cells (repeatable), e.g. --only atss:rs --only yolact")
    parser.add_argument("--results", default="results", help="results root (default: results/)")
    parser.add_argument("--cluster", default=None, metavar="NAME",
                        help="cluster profile (slurm/profiles/NAME.yaml or a path) instead of the spec's launch.cluster")
    parser.add_argument("--partition", default=None, metavar="NAME",
                        help="partition (a role of the profile, e.g. debug, or a partition name) for every run")
    parser.add_argument("--account", default=None, metavar="NAME", help="SLURM account instead of the profile's")


def launch_overrides(args) -> dict:
    """The Request fields the shared launch options set."""
    return {"executor": args.executor, "results_root": args.results, "force": args.force,
            "rerun_stale": args.rerun_stale, "only": tuple(args.only),
            "cluster": args.cluster, "partition": args.partition, "account": args.account}


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="experiment spec, e.g. experiments/synthetic.yaml")
    add_launch_arguments(parser)
    parser.add_argument("--wait", action="store_true", help="block until the runs placed (and any queued or running elsewhere) have ended, with progress")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (SLURM: each array's sbatch options and GPU-hours) and submit nothing")
    parser.add_argument("--rehearse", action="store_true",
                        help="run every run here on CPU, small (2 iterations, 1 image a process, synthetic data of "
                             "the real kind and size, its world size as gloo processes, a checkpoint resumed) into "
                             "results/<experiment>-rehearsal/")
    parser.add_argument("--timeout", type=float, default=None, metavar="MIN", help="with --wait: give up after MIN minutes (exit 1)")


def run(args) -> int:
    from harness.commands import UsageError
    from harness.launch.orchestrate import LaunchError, Request, launch, rehearse

    request = Request(spec=args.spec, wait=args.wait, dry_run=args.dry_run, timeout_min=args.timeout,
                      **launch_overrides(args))
    if args.timeout is not None and (args.timeout <= 0 or not args.wait):
        raise UsageError("--timeout MIN bounds the wait of --wait: add --wait, and give MIN > 0"
                         if args.timeout > 0 else f"--timeout must be more than 0 minutes, got {args.timeout:g}")
    try:
        if args.rehearse:
            if args.dry_run or args.wait:
                raise UsageError("--rehearse runs here and waits; leave out --dry-run and --wait")
            return 0 if rehearse(request) else 1
        outcome = launch(request)
    except LaunchError as exc:
        raise UsageError(str(exc)) from None
    if outcome.error:
        return 1
    waited = args.wait or outcome.executor == "debug"
    if args.dry_run or not waited:
        return 0
    return 0 if outcome.finished and not outcome.failed else 1
