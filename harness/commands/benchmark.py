"""Run an experiment end to end and build its tables: what `make benchmark` calls.

`harness benchmark [SPEC]` (default experiments/synthetic.yaml): runs the spec's unfinished runs; on
this machine it waits with progress, then writes the tables and plots under results/<experiment>/ and
prints the Markdown table with the paths. On a SLURM cluster (sbatch on PATH, or `--executor slurm`)
it submits the job arrays and returns; `harness benchmark SPEC --tables-only` (`make tables`) later
builds the tables from whatever has finished.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

NAME = "benchmark"
HELP = "run a spec (default experiments/synthetic.yaml) and build its tables and plots"
DEFAULT_SPEC = "experiments/synthetic.yaml"


def add_arguments(parser) -> None:
    parser.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help=f"experiment spec (default {DEFAULT_SPEC})")
    parser.add_argument("--executor", choices=["auto", "slurm", "local", "debug"], default=None,
                        help="where runs execute (default: the spec's, itself auto)")
    parser.add_argument("--tables-only", action="store_true", help="only rebuild the tables from finished runs")
    parser.add_argument("--metric", default=None, help="metric of the main table (default bbox_AP)")
    parser.add_argument("--results", default="results", help="results root (default results/)")


def run(args) -> int:
    from harness.cli import UsageError
    from harness.experiments.spec import SpecError, load_spec
    from harness.launch import dispatch
    from harness.results.tables import TablesError, build_all

    from harness.bench.benchmark_timing import process_started_at

    started = process_started_at()  # the timing of `make benchmark` includes start-up and imports
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    results_dir = Path(args.results) / spec.name
    timing = None  # (runs trained, runs in all, data generated): the default grid run here is timed
    if not args.tables_only:
        executor = dispatch.resolve_executor(args.executor or spec.launch["executor"])
        if executor == "slurm" and not dispatch.slurm_reachable():
            raise UsageError("--executor slurm but no SLURM controller answers (sinfo fails); start one "
                             "(make slurm-up) or use --executor local")
        plan = dispatch.make_plan(spec, results_dir)
        print(f"{spec.name}: {len(spec.runs())} runs; {plan.summary()}; executor {executor}", flush=True)
        if executor == "slurm":
            if plan.submit:
                dispatch.submit_slurm(spec, plan.submit, results_dir, force=False)
            print(f"submitted {len(plan.submit)} run(s) to SLURM; follow with `harness status {results_dir}`, "
                  f"then `make tables EXPERIMENT={args.spec}`")
            return 0
        log = lambda msg: print(msg, file=sys.stderr, flush=True)
        if Path(args.spec).resolve() == Path(DEFAULT_SPEC).resolve() and executor == "local":
            timing = (len(plan.submit), len(spec.runs()), _synthetic_data_missing(spec))
        if plan.submit:
            dispatch.run_local_pool(spec, plan.submit, results_dir, False, log=log, executor_kind=executor)
        dispatch.wait_for(spec, results_dir, None, log=log)
    try:
        written = build_all(results_dir, args.metric, spec=spec)
    except TablesError as exc:
        raise UsageError(str(exc)) from None
    tables = written.get("tables/tables.md")
    if tables:
        print(Path(tables).read_text())
    print("written:")
    for key, path in sorted(written.items()):
        if key.startswith("tables/") and key.endswith((".tex", ".csv")) or key.startswith("plots/") and "/curves/" not in key:
            print(f"  {path}")
    if timing is not None:
        from harness.bench.benchmark_timing import record

        seconds = time.time() - started
        path = record(seconds, *timing, out_dir=Path(args.results) / "bench")
        if path:
            print(f"took {seconds:.1f} s ({timing[0]} of {timing[1]} runs trained); timings: {path}")
    return 0


def _synthetic_data_missing(spec) -> bool:
    """Whether the spec's synthetic data still has to be generated (it is, on a fresh machine)."""
    from harness.data.synthetic import is_current, synthetic_cache_dir
    from harness.launch.train import synthetic_params

    params = [p for p in (synthetic_params(d) for d in spec.datasets) if p is not None]
    return any(not is_current(synthetic_cache_dir(p), p) for p in params)
