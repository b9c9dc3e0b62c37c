"""What to run: a spec's runs sorted by their rows, the manifest and the schedulers' queues.

:func:`make_plan` places every run of a spec in one list of a :class:`Plan`:

* ``running``: a live process holds the run's lock, or its SLURM job is running;
* ``queued``: submitted and still waiting (a SLURM job pending or held, or a live local pool that has not
  started it) — :mod:`harness.launch.scheduler` asks the schedulers;
* ``done``: it has a ``done`` row (unless ``force``) made by the current code;
* ``stale`` (run id → what changed): it has a ``done`` row whose fingerprint differs from what the
  current code builds (:mod:`harness.run.fingerprint`): left alone, or submitted with ``rerun_stale``;
* ``submit``: everything else (never run, failed, interrupted, lost; done ones with ``force``).

A run queued or running anywhere is never submitted again, ``--force`` or not. The plan places nothing:
the executors (:mod:`harness.launch.slurm`, :mod:`harness.launch.local`) do, and
:mod:`harness.launch.orchestrate` strings them together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from harness.experiments.spec import RunSpec, Spec
from harness.launch.scheduler import Live, live_runs
from harness.rows import read_rows
from harness.run.fingerprint import staleness


@dataclass
class Plan:
    submit: list[RunSpec] = field(default_factory=list)
    done: list[RunSpec] = field(default_factory=list)
    queued: list[RunSpec] = field(default_factory=list)  # submitted, waiting in a queue (SLURM, a local pool)
    running: list[RunSpec] = field(default_factory=list)  # a live process or SLURM job runs it
    where: dict[str, str] = field(default_factory=dict)  # run id → where it is queued or running
    stale: dict[str, str] = field(default_factory=dict)  # run id → what changed: done by other code

    @property
    def busy(self) -> list[RunSpec]:
        """Runs queued or running elsewhere: left to whoever has them."""
        return self.queued + self.running

    def summary(self) -> str:
        rerun = sum(r.run_id in self.stale for r in self.submit)
        kept = len(self.stale) - rerun
        return (f"{len(self.submit)} to run{f' ({rerun} stale)' if rerun else ''}, {len(self.done)} already done"
                + (f", {kept} stale (left alone; --rerun-stale reruns them)" if kept else "")
                + f", {len(self.queued)} queued, {len(self.running)} running")


def make_plan(spec: Spec, results_dir: Path, force: bool = False, rows: list[dict] | None = None,
              live: dict[str, Live] | None = None, rerun_stale: bool = False) -> Plan:
    """Sort the runs of ``spec`` (``rows``: the results folder's rows when already read; ``live``: what
    :func:`~harness.launch.scheduler.live_runs` answered, when already asked)."""
    if rows is None:
        rows, _ = read_rows(results_dir, warn=True)
    runs = spec.runs()
    if live is None:
        live = live_runs(results_dir, [r.run_id for r in runs])
    by_id = {r["run_id"]: r for r in rows}
    plan = Plan()
    for run in runs:
        if run.run_id in live:
            getattr(plan, live[run.run_id].state).append(run)
            plan.where[run.run_id] = live[run.run_id].where
        elif by_id.get(run.run_id, {}).get("status") == "done" and not force:
            reasons = staleness(by_id[run.run_id], results_dir, run)[0]
            if not reasons:
                plan.done.append(run)
            else:
                plan.stale[run.run_id] = "; ".join(reasons)
                if rerun_stale:
                    plan.submit.append(run)
        else:
            plan.submit.append(run)
    return plan


def group_by_resources(runs: Iterable[RunSpec]) -> dict[tuple, list[RunSpec]]:
    groups: dict[tuple, list[RunSpec]] = defaultdict(list)
    for run in runs:
        groups[run.resources].append(run)
    return dict(groups)


def stale_runs(results_dir: Path, spec: Spec | None = None, rows: list[dict] | None = None) -> dict[str, str]:
    """Run id → what changed, for every ``done`` row of ``results_dir`` whose fingerprint differs from what
    the current code builds for its run (``spec``'s run when it has it, else rebuilt from the row): what the
    tables count as stale. Builds each run's config once (cached, as for the plan)."""
    if rows is None:
        rows, _ = read_rows(results_dir, warn=False)
    runs = {r.run_id: r for r in spec.runs()} if spec is not None else {}
    out = {}
    for row in rows:
        if row.get("status") == "done":
            reasons = staleness(row, results_dir, runs.get(row["run_id"]))[0]
            if reasons:
                out[row["run_id"]] = "; ".join(reasons)
    return out
