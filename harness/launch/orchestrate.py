"""The one run path: ``harness run`` and ``harness benchmark`` (``make benchmark``) both call :func:`launch`.

A :class:`Request` names the spec and how to run it (executor, filters, waiting). :func:`launch`:

1. loads and validates the spec (its loss modules imported here, in the driver) and restricts it to the
   ``--only`` cells; checks the runs' own COCO-format data (every problem one line, before anything trains);
2. resolves the executor (``auto``: SLURM where a controller answers, else local) and refuses what cannot
   work (SLURM unreachable; a multi-process run on the in-process debug executor);
3. plans (:mod:`harness.launch.plan`): runs with a ``done`` row are skipped unless ``force``, stale ones
   (done by other code) unless ``rerun_stale``; runs queued
   or running anywhere (a live lock, a SLURM job pending, held or running, a live local pool) are left
   to whoever has them, ``force`` or not;
4. places the rest, under the submission lock so that a concurrent ``harness run`` sees them queued, and
   records the spec's runs in ``results/<experiment>/spec.json`` (:func:`harness.rows.record_spec`: the
   folder's rows of runs the spec no longer has are superseded, in status and tables):
   SLURM job arrays (:mod:`harness.launch.slurm`); a local pool in this process (``wait``, or ``debug``)
   or in a detached background process that gets the same filters (:mod:`harness.launch.local`);
   ``dry_run`` prints the plan and places nothing;
5. with ``wait`` (:mod:`harness.launch.wait`): blocks with progress until none of the runs it placed, nor
   those it found queued or running elsewhere, is queued or running, then reports each one's own
   outcome and names the failed ones with their reasons.

Every filter reaches every executor, the background one included. Problems the user can fix raise
:class:`LaunchError` (one line; the commands turn it into exit code 2).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.experiments.spec import Spec, SpecError, load_spec
from harness.launch import local, slurm, submission
from harness.launch.manifest import submitting
from harness.launch.plan import Plan, group_by_resources, make_plan
from harness.launch.wait import wait_for
from harness.rows import read_spec_record, record_spec, row_path
from harness.run import allocator
from harness.run.job import new_attempt


class LaunchError(ValueError):
    """A request that cannot run as given; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Request:
    spec: str | Path
    executor: str | None = None  # auto | slurm | local | debug; None: the spec's launch.executor
    results_root: str | Path = "results"
    force: bool = False  # redo runs that already have a done row
    rerun_stale: bool = False  # redo done runs whose fingerprint differs from the current code's
    only: tuple[str, ...] = ()  # DETECTOR[:LOSS] items
    wait: bool = False  # block until every run has a row
    dry_run: bool = False
    timeout_min: float | None = None  # with wait
    cluster: str | None = None  # --cluster / --partition / --account: override the spec's launch section
    partition: str | None = None
    account: str | None = None


@dataclass
class Outcome:
    spec: Spec
    results_dir: Path
    executor: str
    placed: int  # runs submitted or run now
    finished: bool  # waited for, and every run waited for ended (none still queued or running)
    failed: list[dict]  # {"run_id", "reason"} of each run waited for that failed (its own attempt's reason)
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # run id → (state, reason), waited for
    error: str | None = None  # the runs could not be placed (a background pool that did not start)
    stale: dict[str, str] = field(default_factory=dict)  # run id → what changed: done by other code, left alone


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
    restricted = dataclasses.replace(spec, only=frozenset(cells))
    if not restricted.runs():
        raise LaunchError(f"--only {' '.join(only)}: no run of the spec is left ({'; '.join(spec.notes)})")
    return restricted


def check_own_data(spec: Spec) -> None:
    """The spec's ``coco_format`` datasets pass :func:`harness.data.coco_format.check_dataset`, else
    :class:`LaunchError` with every problem on its own line (file and fix). A dataset whose val images are
    train's is not refused: a warning line on stderr."""
    from harness.data.coco_format import check_dataset

    problems, warnings = [], []
    for dataset in spec.datasets:
        if dataset["kind"] == "coco_format":
            problems += check_dataset(dataset, spec.path, warnings)
    if problems:
        raise LaunchError("\n".join(problems))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def missing_here(spec: Spec) -> list[str]:
    """What the spec's runs read at their start that this machine lacks, one line each: the COCO / LVIS
    data root, the backbone checkpoints they start from (not in torch's cache)."""
    from harness.data.real import DataRootError, real_paths
    from harness.detectors.weights import missing_weights

    out = []
    for dataset in spec.datasets:
        if dataset["kind"] in ("coco", "lvis"):
            try:
                real_paths(dataset["kind"], dataset.get("root"))
            except DataRootError as exc:
                out.append(str(exc))
    return out + missing_weights(spec)


def _load(request: Request) -> Spec:
    """The request's spec, validated and restricted to its ``--only`` cells (and ``HARNESS_ALLOCATOR``,
    which the local runs read, checked)."""
    try:
        spec = load_spec(request.spec)
    except SpecError as exc:
        raise LaunchError(str(exc)) from None
    try:
        allocator.library()
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    return restrict(spec, tuple(request.only))


def prepare(request: Request) -> tuple[Spec, Path, str]:
    """The validated, restricted spec, its results folder and the executor that will run it."""
    spec = _load(request)
    check_own_data(spec)
    spec = submission.override_launch(spec, cluster=request.cluster, partition=request.partition,
                                      account=request.account)
    wanted = request.executor or spec.launch["executor"]
    executor = slurm.resolve_executor(wanted)
    if executor in ("local", "debug"):
        refusal = gpu_refusal(spec, wanted, request.spec)
        if refusal and wanted == "auto" and request.dry_run:
            executor = "slurm"  # the dry run shows what a login node would submit, and its cost
        elif refusal:
            raise LaunchError(refusal)
    named = [flag for flag, value in (("--cluster", request.cluster), ("--partition", request.partition),
                                      ("--account", request.account)) if value]
    if named and executor != "slurm":  # they would be dropped without a word
        why = " (no SLURM controller answers here)" if wanted == "auto" else ""
        raise LaunchError(f"{', '.join(named)} {'says' if len(named) == 1 else 'say'} where SLURM jobs go, but these runs go to the {executor} executor"
                          f"{why}: pass --executor slurm (with --dry-run to see the submission from here), or leave "
                          f"{' and '.join(named)} out")
    if executor == "slurm" and not request.dry_run and not slurm.slurm_reachable():
        raise LaunchError("--executor slurm but no SLURM controller answers (sinfo fails); start one (make slurm-up, "
                          "then export SLURM_CONF as it prints) or use --executor local")
    multi = sorted({r.run_id for r in spec.runs() if r.world_size > 1})
    if executor == "debug" and multi:
        raise LaunchError(f"--executor debug runs one process per run, but {multi[0]} trains in several "
                          f"(tasks_per_run / gpus_per_run); use --executor local or slurm")
    return spec, Path(request.results_root) / spec.name, executor


def gpu_refusal(spec: Spec, executor: str, spec_path) -> str | None:
    """Why ``spec`` cannot train on this machine (its runs want GPUs it lacks), or None."""
    gpus = max((r.launch["gpus_per_run"] for r in spec.runs()), default=0)
    if not gpus:
        return None
    have = local.local_gpus()
    if have >= gpus:
        return None
    where = ("no SLURM controller answers here (sinfo) and " if executor == "auto" else "")
    return (f"{spec.name}'s runs need {gpus} GPU(s) each, but {where}this machine has {have}: submit it from the "
            f"cluster's login node (harness run {spec_path} there), check it here on CPU with --rehearse, or see the "
            f"submission and its cost with --dry-run")


def superseding_note(results_dir: Path, spec: Spec) -> str | None:
    """What recording ``spec`` as the folder's current spec supersedes: the runs with a row that the spec
    as last run had and ``spec`` lacks (an edited spec, or another spec file of the same name), or None."""
    previous = read_spec_record(results_dir)
    if previous is None:
        return None
    dropped = sorted(run_id for run_id in set(previous["runs"]) - {r.run_id for r in spec.runs()}
                     if row_path(results_dir, run_id).exists())
    if not dropped:
        return None
    this = str(Path(spec.path).resolve()) if spec.path else None
    if previous.get("spec") and this and previous["spec"] != this:
        why = (f"another spec file of experiment {spec.name!r}, {previous['spec']}, was run last into {results_dir} "
               f"(give each spec its own name)")
    else:
        why = "the spec changed since its last run"
    return (f"note: {why}: {len(dropped)} row(s) of runs it had and this spec lacks are superseded from now on "
            f"(kept in runs/, shown as superseded by harness status, left out of the tables), e.g. {dropped[0]}")


def _print_runs(group, out: Callable[[str], None]) -> None:
    for r in group:
        ds = (r.dataset.get("name") or r.dataset["kind"]) + (
            f" rfs={r.dataset['repeat_factor']}" if r.dataset.get("repeat_factor") else "")
        out(f"    {r.run_id:<40} {r.detector:<13} {r.loss:<6} seed {r.seed}  {ds}  {r.batch.line()}")


def _print_plan(spec: Spec, plan: Plan, executor: str, out: Callable[[str], None]) -> list[str]:
    """The plan; for SLURM each array's sbatch options and cost, and the problems found (returned)."""
    found: list[str] = []
    if executor == "slurm" and plan.submit:
        from harness.launch import cost

        arrays = submission.build_arrays(plan.submit)
        times = cost.StepTimes()
        costs = []
        for array in arrays:
            out("\n".join(array.describe(spec.name, len(arrays))))
            costs.append(cost.array_cost(array.runs, times))
            out(cost.describe(costs[-1], array.gpus, array.time_min))
            _print_runs(array.runs, out)
        out(cost.total_line(costs))
        found = submission.problems(arrays)
    else:
        for resources, group in group_by_resources(plan.submit).items():
            r = group[0]
            out(f"  {len(group)} run(s): {r.launch['cpus_per_run']} CPU(s), {r.launch['mem_gb']:g} GB, "
                f"{r.launch['time_min']} min, {r.world_size} process(es) per run")
            _print_runs(group, out)
    for r in plan.done:
        out(f"  done     {r.run_id}")
    for run_id, why in plan.stale.items():
        out(f"  stale    {run_id} ({why})")
    for r in plan.queued:
        out(f"  queued   {r.run_id} ({plan.where[r.run_id]})")
    for r in plan.running:
        out(f"  running  {r.run_id} ({plan.where[r.run_id]})")
    return found


def launch(request: Request, out: Callable[[str], None] = print,
           log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
           prepared: tuple[Spec, Path, str] | None = None) -> Outcome:
    """Run ``request`` (see the module docstring). ``out``: the plan and summaries; ``log``: progress;
    ``prepared``: what :func:`prepare` gave for this request, when the caller already asked it. A results
    folder this user cannot write (a teammate's, under umask 022) is a :class:`LaunchError`."""
    try:
        return _launch(request, out, log, prepared)
    except PermissionError as exc:
        raise LaunchError(permission_line(exc, Path(request.results_root))) from None


def permission_line(exc: PermissionError, results_root: Path) -> str:
    """One line for a file of the results folder this user may not write: whose it is and what to do."""
    path = Path(exc.filename) if exc.filename else results_root
    owner = ""
    probe = path if path.exists() else path.parent
    try:
        import grp
        import pwd

        st = probe.stat()
        owner = (f" ({probe} belongs to {pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}, "
                 f"mode {st.st_mode & 0o777:o})")
    except (OSError, KeyError):
        pass
    return (f"cannot write {path}: permission denied{owner}; a results folder shared by a team needs group "
            f"write: everyone sets `umask 002` and the folder is a setgid group folder (docs/cluster.md, "
            f"'A team's results folder'), or give --results a folder of your own")


def _launch(request: Request, out: Callable[[str], None], log: Callable[[str], None],
            prepared: tuple[Spec, Path, str] | None) -> Outcome:
    spec, results_dir, executor = prepared or prepare(request)
    for note in spec.notes:  # detectors `detectors: all` left out of a dataset, and why
        out(note)
    missing = missing_here(spec)
    if missing and executor != "slurm" and not request.dry_run:  # every run here would fail at its start
        raise LaunchError(missing[0] + (f" (and {len(missing) - 1} more: harness doctor {request.spec})"
                                        if len(missing) > 1 else ""))

    def note_missing() -> None:  # SLURM jobs read them on the compute nodes, which may see other files
        for line in missing:
            out(f"  note: not found here, and the runs need it at their start: {line}")
    if request.dry_run:
        plan = make_plan(spec, results_dir, force=request.force, rerun_stale=request.rerun_stale)
        out(f"{spec.name}: {len(spec.runs())} runs; {plan.summary()}; executor {executor}")
        note_missing()
        if executor == "slurm" and not slurm.slurm_reachable():
            out("  (no SLURM controller answers here: this is what `harness run` submits from a login node)")
        found = _print_plan(spec, plan, executor, out)
        if found:  # what sbatch would refuse, before anything is submitted
            raise LaunchError("\n".join(found))
        return Outcome(spec, results_dir, executor, placed=0, finished=False, failed=[])
    attempt = new_attempt()
    waits = request.wait or executor == "debug"
    pool = None
    fresh = not results_dir.exists()
    refused: submission.SubmissionError | None = None
    with submitting(results_dir):  # plan and record as one step: a concurrent run sees these queued
        plan = make_plan(spec, results_dir, force=request.force, rerun_stale=request.rerun_stale)
        out(f"{spec.name}: {len(spec.runs())} runs; {plan.summary()}; executor {executor}")
        note_missing()
        if executor == "slurm" and plan.submit:
            try:
                slurm.submit_slurm(spec, plan.submit, results_dir, request.force, attempt, request.rerun_stale)
            except submission.SubmissionError as exc:
                refused = exc
        elif executor != "slurm" and plan.submit and waits:
            pool = local.LocalPool(spec, plan.submit, results_dir, request.force, attempt, executor, log,
                                   rerun_stale=request.rerun_stale)
            pool.open()
        if refused is None:  # the folder says which runs are current: the whole spec's, whatever --only ran
            whole = dataclasses.replace(spec, only=None)
            note = superseding_note(results_dir, whole)
            record_spec(results_dir, whole)
            if note:
                out(note)
    if refused is not None:  # nothing submitted into a folder this call made: it leaves none (its lock files)
        if fresh and not (results_dir / "manifest.json").exists():
            shutil.rmtree(results_dir, ignore_errors=True)
        raise LaunchError(str(refused))
    outcome = Outcome(spec, results_dir, executor, placed=len(plan.submit), finished=False, failed=[],
                      stale={run_id: why for run_id, why in plan.stale.items()
                             if run_id not in {r.run_id for r in plan.submit}})
    if executor == "slurm":
        out(f"submitted {len(plan.submit)} run(s) as SLURM job arrays; manifest: {results_dir / 'manifest.json'}")
    elif plan.submit and not waits:  # the background pool plans again, under the same lock, and records its queue
        started = local.spawn_background_pool(Path(request.spec), results_dir, executor, force=request.force,
                                              only=request.only, rerun_stale=request.rerun_stale)
        if started.started:
            out(f"running {len(plan.submit)} run(s) locally in the background (pid {started.pid}, log "
                f"{results_dir / 'local-pool.log'})")
        else:
            outcome.placed, outcome.error = 0, f"the background pool (pid {started.pid}) did not start: {started.note}"
            out(outcome.error)
            return outcome
    if not waits:
        if plan.submit or plan.busy:
            out(f"follow with: harness status {results_dir}")
        return outcome
    watched: dict[str, str | None] = {r.run_id: None for r in plan.busy}  # somebody else's: judged by their rows
    if pool is not None:
        try:
            outcome.outcomes.update(pool.run())
        finally:
            pool.close()
    else:
        watched.update({r.run_id: attempt for r in plan.submit})  # submitted to SLURM here
    outcome.finished = True
    if watched:
        timeout_s = None if request.timeout_min is None else request.timeout_min * 60
        outcome.finished, ended = wait_for(results_dir, watched, timeout_s, log=log)
        outcome.outcomes.update(ended)
    outcome.failed = [{"run_id": run_id, "reason": reason} for run_id, (state, reason) in sorted(outcome.outcomes.items())
                      if state == "failed"]
    if outcome.outcomes or watched:
        states = [state for state, _ in outcome.outcomes.values()]
        unended = len(set(watched) - set(outcome.outcomes))
        out(f"waited for {len(set(watched) | set(outcome.outcomes))} run(s): {states.count('done')} done, "
            f"{states.count('failed')} failed" + (f", {states.count('skipped')} stepped aside" if 'skipped' in states else "")
            + (f", {unended} still queued or running" if unended else ""))
    for f in outcome.failed:
        log(f"failed: {f['run_id']}: {f['reason']}")
    return outcome


def rehearse(request: Request, out: Callable[[str], None] = print,
             log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> bool:
    """``harness run SPEC --rehearse``: every run of the (restricted) spec on this CPU, small
    (:mod:`harness.launch.rehearse`); True when every run passed."""
    from harness.launch.rehearse import rehearse as run_rehearsal

    spec = _load(request)
    return all(o.ok for o in run_rehearsal(spec, Path(request.results_root), out=out, log=log))

