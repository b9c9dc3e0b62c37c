"""Run an experiment spec: submit its runs (SLURM, local or debug), skipping finished ones.

Validates the whole spec first (exit 2 on any problem). `--dry-run` prints the plan: runs to do, runs
already done, and the job arrays by resources. Without `--wait` it submits, writes
results/<experiment>/manifest.json and returns; `--wait` blocks with progress until every run has a row.
Reruns submit only runs without a `done` row (`--force` redoes them); failed runs run again.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "run"
HELP = "run an experiment spec (experiments/*.yaml) on SLURM or this machine"


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="experiment spec, e.g. experiments/synthetic.yaml")
    parser.add_argument("--executor", choices=["auto", "slurm", "local", "debug"], default=None,
                        help="where runs execute (default: the spec's launch.executor, itself 'auto': slurm when sbatch exists, else local)")
    parser.add_argument("--wait", action="store_true", help="block until every run has finished, with progress")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and submit nothing")
    parser.add_argument("--force", action="store_true", help="redo runs that already have a done row")
    parser.add_argument("--only", action="append", default=[], metavar="DETECTOR[:LOSS]",
                        help="restrict to some cells (repeatable), e.g. --only atss:rs --only yolact")
    parser.add_argument("--timeout", type=float, default=None, metavar="MIN", help="with --wait: give up after MIN minutes (exit 1)")
    parser.add_argument("--results", default="results", help="results root (default: results/)")


def _filter(spec, only):
    """``--only DET[:LOSS]`` (repeatable) restricts the spec to those cells."""
    import dataclasses

    from harness.cli import UsageError

    if not only:
        return spec
    cells = set()
    for item in only:
        det, _, loss = item.partition(":")
        if det not in spec.detectors:
            raise UsageError(f"--only {item}: detector {det!r} is not in the spec; valid: {', '.join(spec.detectors)}")
        if loss and loss not in spec.losses:
            raise UsageError(f"--only {item}: loss {loss!r} is not in the spec; valid: {', '.join(spec.losses)}")
        cells |= {(det, loss)} if loss else {(det, l) for l in spec.losses}
    return dataclasses.replace(spec, only=frozenset(cells))


def run(args) -> int:
    from harness.cli import UsageError
    from harness.experiments.spec import SpecError, load_spec
    from harness.launch import dispatch

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    spec = _filter(spec, args.only)
    results_dir = Path(args.results) / spec.name
    executor = dispatch.resolve_executor(args.executor or spec.launch["executor"])
    if executor == "slurm" and not dispatch.slurm_reachable():
        raise UsageError("--executor slurm but no SLURM controller answers (sinfo fails); start one (make slurm-up, "
                         "then export SLURM_CONF as it prints) or use --executor local")
    multi = sorted({r.run_id for r in spec.runs() if r.world_size > 1})
    if executor == "debug" and multi:
        raise UsageError(f"--executor debug runs one process per run, but {multi[0]} trains in several "
                         f"(tasks_per_run / gpus_per_run); use --executor local or slurm")
    plan = dispatch.make_plan(spec, results_dir, force=args.force)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    print(f"{spec.name}: {len(spec.runs())} runs; {plan.summary()}; executor {executor}")
    if args.dry_run:
        for resources, group in dispatch.group_by_resources(plan.submit).items():
            cluster, partition, gpus, cpus, mem, minutes, tasks = resources
            print(f"  array of {len(group)}: cluster {cluster}, partition {partition or 'default'}, {gpus} GPU(s), "
                  f"{cpus} CPU(s), {mem:g} GB, {minutes} min, {tasks} process(es) per run")
            for r in group:
                ds = r.dataset["kind"] + (f" rfs={r.dataset['repeat_factor']}" if r.dataset.get("repeat_factor") else "")
                print(f"    {r.run_id:<40} {r.detector:<13} {r.loss:<6} seed {r.seed}  {ds}")
        for r in plan.done:
            print(f"  done     {r.run_id}")
        for r in plan.busy:
            print(f"  running  {r.run_id} (elsewhere)")
        return 0
    if executor == "slurm":
        jobs = dispatch.submit_slurm(spec, plan.submit, results_dir, args.force)
        print(f"submitted {len(jobs)} run(s) as SLURM job arrays; manifest: {results_dir / 'manifest.json'}")
        if not args.wait:
            print(f"follow with: harness status {results_dir}")
            return 0
    elif plan.submit and (args.wait or executor == "debug"):
        dispatch.run_local_pool(spec, plan.submit, results_dir, args.force, log=log, executor_kind=executor)
    elif plan.submit:
        pid = dispatch.spawn_background_pool(Path(args.spec), results_dir, args.force, executor)
        print(f"running {len(plan.submit)} run(s) locally in the background (pid {pid}, log {results_dir / 'local-pool.log'})")
        print(f"follow with: harness status {results_dir}")
        return 0
    ok = dispatch.wait_for(spec, results_dir, None if args.timeout is None else args.timeout * 60, log=log)
    from harness.results.rows import read_rows

    rows, _ = read_rows(results_dir, warn=False)
    ids = {r.run_id for r in spec.runs()}
    failed = [r for r in rows if r["run_id"] in ids and r["status"] == "failed"]
    for r in failed:
        print(f"failed: {r['run_id']}: {r.get('reason')}", file=sys.stderr)
    return 0 if ok and not failed else 1
