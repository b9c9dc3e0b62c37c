"""Run an experiment end to end and build its tables: what `make benchmark` calls.

`harness benchmark [SPEC]` (default experiments/synthetic.yaml) runs the spec's unfinished runs through
the same path as `harness run` (harness.launch.orchestrate; `--executor`, `--only`, `--force` and
`--rerun-stale` as there). On this machine it waits with progress, then writes the tables and plots under
results/<experiment>/ and prints the Markdown tables with the paths. On a SLURM cluster (a controller
answers, or `--executor slurm`) it submits the job arrays and returns; `harness benchmark SPEC
--tables-only` (`make tables`) later builds the tables from whatever has finished. The default grid run
here records its wall time in results/bench/benchmark.md; a full run (every run trained) also times the
fixed reference workload of harness.bench.reference there, so that its time compares across machines. Exit
1 when a run it waited for failed (or did not end): the tables are still built from what finished, then
each failed run is listed with its reason.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from harness.experiments import DEFAULT_SPEC_NAME, default_spec, is_default_spec

NAME = "benchmark"
HELP = f"run a spec (default {DEFAULT_SPEC_NAME}) and build its tables and plots"


def add_arguments(parser) -> None:
    from harness.commands.run import add_launch_arguments

    parser.add_argument("spec", nargs="?", default=None,
                        help=f"experiment spec (default: the harness checkout's {DEFAULT_SPEC_NAME}, wherever this "
                             f"runs from)")
    add_launch_arguments(parser)
    parser.add_argument("--tables-only", action="store_true", help="only rebuild the tables from finished runs")
    parser.add_argument("--metric", default=None, help="metric of the main table (default bbox_AP)")


def _default_root(results: str) -> bool:
    """``results`` is the default results root (what make's targets read)."""
    return Path(results).resolve() == Path("results").resolve()


def tables_command(spec: str, results: str) -> str:
    """The command that builds the tables of ``spec`` from what has finished under ``results``."""
    if _default_root(results):
        return f"make tables EXPERIMENT={spec}"
    return f"harness benchmark {spec} --tables-only --results {results}"


def _reference_before(spec, results_dir, steps: dict) -> dict | None:
    """The reference workload timed before the runs (the first half of the full run's reference, see
    :func:`harness.bench.reference.combined`) when none of ``spec``'s runs has a row yet, i.e. every run will
    train; None otherwise, or when it fails (said on stdout)."""
    from harness.bench.reference import REPEATS_EACH_SIDE, measure
    from harness.launch.local import local_slots
    from harness.rows import read_rows

    runs = spec.runs()
    ids = {r.run_id for r in runs}
    if (Path(results_dir) / "runs").is_dir() and any(r["run_id"] in ids for r in read_rows(results_dir, warn=False)[0]):
        return None
    slots = local_slots(runs)
    print(f"timing the reference workload before the runs ({slots} at once, as the runs) ...", flush=True)
    step = time.time()
    try:
        return measure(processes=slots, repeats=REPEATS_EACH_SIDE)
    except RuntimeError as exc:
        print(f"warning: {exc}; the reference is timed after the runs only", flush=True)
        return None
    finally:
        steps["reference_s"] = time.time() - step


def run(args) -> int:
    from harness.bench.benchmark_timing import process_started_at
    from harness.commands import UsageError
    from harness.experiments.spec import SpecError, load_spec
    from harness.launch.local import prepare_data
    from harness.launch.orchestrate import LaunchError, Request, launch, prepare
    from harness.launch.plan import stale_runs
    from harness.results.tables import TablesError, build_all

    started = process_started_at()  # the timing of `make benchmark` includes start-up and imports
    if args.spec is None:
        args.spec = default_spec()
    failed_runs: list[dict] | None = None  # the runs of this benchmark that failed (exit 1), once known
    timing = None  # (runs trained, runs in all, data generated): the default grid run here is timed
    steps: dict[str, float] = {}  # seconds of its steps, for results/bench/benchmark.md
    generated = False
    stale: dict[str, str] | None = None  # run id → what changed, of the done rows other code made
    reference_before = None  # the reference workload timed before the runs of what should be a full run
    try:
        if args.tables_only:
            spec = load_spec(args.spec)
        else:
            # On SLURM: submit and return (waiting for a cluster queue is `harness status`'s job, the tables
            # come later with `make tables`); here: wait for the runs.
            from harness.commands.run import launch_overrides

            request = Request(spec=args.spec, **launch_overrides(args))
            prepared = prepare(request)
            request = dataclasses.replace(request, wait=prepared[2] != "slurm")
            if request.wait:  # runs here: the synthetic data first, timed apart (a fresh clone makes it)
                step = time.time()
                generated = prepare_data(prepared[0].runs(), log=lambda msg: print(msg, flush=True))
                steps["data_s"] = time.time() - step
            if request.wait and is_default_spec(args.spec) and not args.only and prepared[2] == "local":
                reference_before = _reference_before(prepared[0], prepared[1], steps)
            step = time.time()
            outcome = launch(request, prepared=prepared)
            steps["runs_s"] = time.time() - step
            spec = outcome.spec
            stale = None if args.only else outcome.stale  # the plan saw the --only cells' runs alone
            if outcome.executor == "slurm":
                print(f"then: {tables_command(args.spec, args.results)}")
                return 0
            if not outcome.finished or outcome.failed:  # the tables are still built, from what finished
                failed_runs = outcome.failed
            default = is_default_spec(args.spec) and not args.only
            if default and outcome.executor == "local":
                timing = (outcome.placed, len(spec.runs()), generated)
    except (SpecError, LaunchError) as exc:
        raise UsageError(str(exc)) from None
    results_dir = Path(args.results) / spec.name
    if args.tables_only and not (results_dir / "runs").is_dir():
        raise UsageError(f"{results_dir} holds no results of {spec.name} yet: run it first (harness run {args.spec}"
                         f"{'' if _default_root(args.results) else ' --results ' + args.results}), then "
                         f"{tables_command(args.spec, args.results)}")
    step = time.time()
    try:
        written = build_all(results_dir, args.metric, spec=spec, stale=stale if stale is not None else
                            stale_runs(results_dir, spec))
    except TablesError as exc:
        raise UsageError(str(exc)) from None
    steps["tables_s"] = time.time() - step
    tables = written.get("tables/tables.md")
    if tables:
        print(Path(tables).read_text())
    print("written:")
    for key, path in sorted(written.items()):
        if key.startswith("tables/") and key.endswith((".tex", ".csv")) or key.startswith("plots/") and "/curves/" not in key:
            print(f"  {path}")
    if timing is not None:
        from harness.bench.benchmark_timing import record
        from harness.bench.reference import measure
        from harness.launch.local import local_slots

        runs = spec.runs()
        slots = local_slots(runs)
        reference = None
        if timing[0] == timing[1]:  # a full run: its time as a multiple of a fixed workload timed here
            from harness.bench.reference import REPEATS, REPEATS_EACH_SIDE, combined

            print(f"timing the reference workload ({slots} at once, as the runs) ...", flush=True)
            step = time.time()
            after = None
            try:
                after = measure(processes=slots, repeats=REPEATS_EACH_SIDE if reference_before else REPEATS)
            except RuntimeError as exc:
                print(f"warning: {exc}; the full run is recorded without its reference after the runs", flush=True)
            reference = combined(reference_before, after)
            steps["reference_s"] = steps.get("reference_s", 0.0) + time.time() - step

        from harness.rows import read_rows

        seconds = time.time() - started
        ids = {r.run_id for r in runs}
        rows = [r for r in read_rows(results_dir, warn=False)[0] if r["run_id"] in ids]
        path = record(seconds, *timing, out_dir=Path(args.results) / "bench", steps=steps, rows=rows,
                      slots=slots, reference=reference)
        if path:
            multiple = f", {seconds / reference['seconds']:.1f} × the reference workload's {reference['seconds']:.2f} s" \
                if reference else ""
            print(f"took {seconds:.1f} s ({timing[0]} of {timing[1]} runs trained{multiple}); timings: {path}")
    if failed_runs is not None:
        for f in failed_runs:
            print(f"failed: {f['run_id']}: {f['reason']}")
        print(f"{len(failed_runs)} run(s) failed" if failed_runs else "not every run finished (see above)")
        return 1
    return 0
