"""The one run path: ``harness run`` and ``harness benchmark`` (``make benchmark``) both call :func:`launch`.

A :class:`Request` names the spec and how to run it (executor, filters, waiting). :func:`launch`:

1. loads and validates the spec (its loss modules imported here, in the driver) and restricts it to the
   ``--only`` cells;
2. resolves the executor (``auto``: SLURM where a controller answers, else local) and refuses what cannot
   work (SLURM unreachable; a multi-process run on the in-process debug executor);
3. plans: runs with a ``done`` row are skipped unless ``force``; runs locked by a live process are left to it;
4. places the rest: SLURM job arrays; a local pool in this process (``wait``, or ``debug``) or in a detached
   background process that gets the same filters; ``dry_run`` prints the plan and places nothing;
5. with ``wait``: blocks with progress until every run has a row, then names the failed ones.

Every filter reaches every executor, the background one included. Problems the user can fix raise
:class:`LaunchError` (one line; the commands turn it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.experiments.spec import Spec, SpecError, load_spec
from harness.launch import dispatch
from harness.rows import read_rows


class LaunchError(ValueError):
    """A request that cannot run as given; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Request:
    spec: str | Path
    executor: str | None = None  # auto | slurm | local | debug; None: the spec's launch.executor
    results_root: str | Path = "results"
    force: bool = False  # redo runs that already have a done row
    only: tuple[str, ...] = ()  # DETECTOR[:LOSS] items
    wait: bool = False  # block until every run has a row
    dry_run: bool = False
    timeout_min: float | None = None  # with wait


@dataclass
class Outcome:
    spec: Spec
    results_dir: Path
    executor: str
    placed: int  # runs submitted or run now
    finished: bool  # every run of the (restricted) spec has a row
    failed: list[dict]  # rows of failed runs (when waited for)


def restrict(spec: Spec, only: tuple[str, ...]) -> Spec:
    """``--only DET[:LOSS]`` items (repeatable) restrict the spec to those cells."""
    if not only:
        return spec
    cells: set[tuple[str, str]] = set()
    for item in only:
        det, _, loss = item.partition(":")
        if det not in spec.detectors:
            raise LaunchError(f"--only {item}: detector {det!r} is not in the spec; valid: {', '.join(spec.detectors)}")
        if loss and loss not in spec.losses:
            raise LaunchError(f"--only {item}: loss {loss!r} is not in the spec; valid: {', '.join(spec.losses)}")
        cells |= {(det, loss)} if loss else {(det, name) for name in spec.losses}
    return dataclasses.replace(spec, only=frozenset(cells))


def prepare(request: Request) -> tuple[Spec, Path, str]:
    """The validated, restricted spec, its results folder and the executor that will run it."""
    try:
        spec = load_spec(request.spec)
    except SpecError as exc:
        raise LaunchError(str(exc)) from None
    spec = restrict(spec, tuple(request.only))
    executor = dispatch.resolve_executor(request.executor or spec.launch["executor"])
    if executor == "slurm" and not request.dry_run and not dispatch.slurm_reachable():
        raise LaunchError("--executor slurm but no SLURM controller answers (sinfo fails); start one (make slurm-up, "
                          "then export SLURM_CONF as it prints) or use --executor local")
    multi = sorted({r.run_id for r in spec.runs() if r.world_size > 1})
    if executor == "debug" and multi:
        raise LaunchError(f"--executor debug runs one process per run, but {multi[0]} trains in several "
                          f"(tasks_per_run / gpus_per_run); use --executor local or slurm")
    return spec, Path(request.results_root) / spec.name, executor


def _print_plan(plan: dispatch.Plan, out: Callable[[str], None]) -> None:
    for resources, group in dispatch.group_by_resources(plan.submit).items():
        cluster, partition, gpus, cpus, mem, minutes, tasks = resources
        out(f"  array of {len(group)}: cluster {cluster}, partition {partition or 'default'}, {gpus} GPU(s), "
            f"{cpus} CPU(s), {mem:g} GB, {minutes} min, {tasks} process(es) per run")
        for r in group:
            ds = r.dataset["kind"] + (f" rfs={r.dataset['repeat_factor']}" if r.dataset.get("repeat_factor") else "")
            out(f"    {r.run_id:<40} {r.detector:<13} {r.loss:<6} seed {r.seed}  {ds}")
    for r in plan.done:
        out(f"  done     {r.run_id}")
    for r in plan.busy:
        out(f"  running  {r.run_id} (elsewhere)")


def launch(request: Request, out: Callable[[str], None] = print,
           log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
           prepared: tuple[Spec, Path, str] | None = None) -> Outcome:
    """Run ``request`` (see the module docstring). ``out``: the plan and summaries; ``log``: progress;
    ``prepared``: what :func:`prepare` gave for this request, when the caller already asked it."""
    spec, results_dir, executor = prepared or prepare(request)
    plan = dispatch.make_plan(spec, results_dir, force=request.force)
    out(f"{spec.name}: {len(spec.runs())} runs; {plan.summary()}; executor {executor}")
    outcome = Outcome(spec, results_dir, executor, placed=len(plan.submit), finished=False, failed=[])
    if request.dry_run:
        _print_plan(plan, out)
        outcome.placed = 0
        return outcome
    if executor == "slurm":
        if plan.submit:
            dispatch.submit_slurm(spec, plan.submit, results_dir, request.force)
        out(f"submitted {len(plan.submit)} run(s) as SLURM job arrays; manifest: {results_dir / 'manifest.json'}")
        if not request.wait:
            out(f"follow with: harness status {results_dir}")
            return outcome
    elif plan.submit and not (request.wait or executor == "debug"):
        pid = dispatch.spawn_background_pool(Path(request.spec), results_dir, executor, force=request.force,
                                             only=request.only)
        out(f"running {len(plan.submit)} run(s) locally in the background (pid {pid}, log "
            f"{results_dir / 'local-pool.log'})")
        out(f"follow with: harness status {results_dir}")
        return outcome
    elif plan.submit:
        dispatch.run_local_pool(spec, plan.submit, results_dir, request.force, log=log, executor_kind=executor)
    elif not (request.wait or executor == "debug"):
        return outcome  # nothing to place here, and no waiting asked for
    timeout_s = None if request.timeout_min is None else request.timeout_min * 60
    outcome.finished = dispatch.wait_for(spec, results_dir, timeout_s, log=log)
    rows, _ = read_rows(results_dir, warn=False)
    ids = {r.run_id for r in spec.runs()}
    outcome.failed = [r for r in rows if r["run_id"] in ids and r["status"] == "failed"]
    for r in outcome.failed:
        log(f"failed: {r['run_id']}: {r.get('reason')}")
    return outcome
