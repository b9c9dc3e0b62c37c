"""The state of every run of an experiment, from its rows, manifest, locks and (on SLURM) the queue.

States: ``running`` (a live process holds the run's lock, or its SLURM job runs); ``pending``
(submitted, not started: queued in SLURM, held there, or in a live local pool); ``done``; ``stale``
(done, but its row's fingerprint differs from what the current code builds for it: the reason says what
changed, e.g. "loss module examples/quality_focal.py changed"; a row without a fingerprint is stale with
"no fingerprint recorded"; :mod:`harness.run.fingerprint`); ``failed``
(with the reason from the row); ``interrupted`` (started, no row and nobody running it: a rerun resumes
it); ``lost`` (submitted, the job or its local pool ended without a row); ``missing`` (never submitted);
``superseded`` (a run the spec no longer has, its spec edited since: its row is left out of the tables).
Which runs are current: ``--spec`` when given, else the folder's record of the spec as last run
(``spec.json``, :func:`harness.rows.current_runs`), else the latest row of each cell and seed.
A run queued or running again is shown so even when an older row exists, and one queued or running
though the spec no longer has it says so. Runs that started are found by their work folders too (a
deleted manifest does not hide a running run). Corrupt row files are listed apart. Queues are asked
through :mod:`harness.launch.scheduler`, as the plan asks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.experiments.spec import parse_run_id
from harness.launch.manifest import read_manifest
from harness.launch.scheduler import JobState, live_runs, slurm_states
from harness.rows import CorruptRow, current_rows, current_runs, read_rows
from harness.run.fingerprint import staleness
from harness.run.job import work_dir

STATES = ("done", "stale", "failed", "running", "pending", "interrupted", "lost", "missing", "superseded")
# States that need the user: `harness status` exits 1 when a current run is in one (or a row is corrupt).
TROUBLE = ("failed", "interrupted", "lost")


@dataclass
class RunStatus:
    run_id: str
    detector: str
    loss: str
    seed: int
    state: str
    reason: str = ""
    job_id: str | None = None


def experiment_status(results_dir: str | Path, spec=None, current: tuple | None = None
                      ) -> tuple[list[RunStatus], list[CorruptRow]]:
    """Every run's :class:`RunStatus` and the corrupt row files. ``current``: what
    :func:`~harness.rows.current_runs` answered for ``results_dir`` and ``spec``, when already asked."""
    results_dir = Path(results_dir)
    wanted, source = current or current_runs(results_dir, spec)
    spec_runs = {r.run_id: r for r in spec.runs()} if spec is not None else {}
    rows, corrupt = read_rows(results_dir, warn=False)
    by_id = {r["run_id"]: r for r in rows}
    manifest = read_manifest(results_dir)
    known: dict[str, dict] = dict(manifest["runs"])
    for r in rows:
        known.setdefault(r["run_id"], {"detector": r.get("detector"), "loss": r.get("loss"), "seed": r.get("seed")})
    for run_id, meta in (wanted or {}).items():
        known.setdefault(run_id, {**meta, "never": True})
    work = results_dir / "work"
    for folder in sorted(work.iterdir()) if work.is_dir() else []:  # started, though nothing else names it
        if folder.is_dir() and folder.name not in known:
            named = parse_run_id(folder.name)
            known[folder.name] = dict(zip(("detector", "loss", "seed"), named)) if named else {}
    if wanted is not None:
        superseded = set(known) - set(wanted)
    else:  # no spec, no record: of the rows of a cell and seed the latest is current
        superseded = {r["run_id"] for r in current_rows(rows, None)[1]}
    # SLURM is asked once: for the queue (live) and for how the jobs that left no row ended (lost)
    slurm = slurm_states(sorted({str(m["job_id"]) for m in known.values()
                                 if m.get("executor") == "slurm" and m.get("job_id")}))
    live = live_runs(results_dir, known, manifest=manifest, states=slurm)
    out = []
    for run_id, meta in sorted(known.items(), key=lambda kv: (kv[1].get("detector") or "", kv[1].get("loss") or "", kv[0])):
        st = RunStatus(run_id, meta.get("detector"), meta.get("loss"), meta.get("seed"), "missing", job_id=meta.get("job_id"))
        folder = work_dir(results_dir, run_id)
        if run_id in live:
            st.state = "running" if live[run_id].state == "running" else "pending"
            st.reason = live[run_id].where + (f"; not a run of {source}" if run_id in superseded else "")
        elif run_id in superseded:
            had = f"its row: {by_id[run_id]['status']}" if run_id in by_id else "no row"
            why = f"not a run of {source}" if wanted is not None else "a later row of its cell and seed counts"
            st.state, st.reason = "superseded", f"{why} ({had}; left out of the tables)"
        elif run_id in by_id and by_id[run_id]["status"] == "done":
            reasons, note = staleness(by_id[run_id], results_dir, spec_runs.get(run_id))
            st.state, st.reason = ("stale", "; ".join(reasons)) if reasons else ("done", note)
            row_attempt = (by_id[run_id].get("provenance") or {}).get("attempt")
            if meta.get("attempt") and row_attempt and row_attempt != meta["attempt"]:  # e.g. --force, then lost
                later = (f"its latest submission ({meta.get('submitted_at') or 'attempt ' + meta['attempt']}) "
                         "ended without a row: this row is an earlier attempt's")
                st.reason = "; ".join(r for r in (st.reason, later) if r)
        elif run_id in by_id:
            st.state, st.reason = "failed", by_id[run_id].get("reason") or ""
        elif meta.get("never"):
            st.state = "missing"
        elif meta.get("executor") == "slurm":
            job_state = slurm.get(str(meta.get("job_id")), JobState("UNKNOWN")).state
            st.state, st.reason = "lost", f"job {meta.get('job_id')} ended {job_state} without a row"
        elif (folder / "state.json").exists():
            st.state, st.reason = "interrupted", "started, no row and nobody running it; a rerun resumes it"
        elif meta.get("pool"):
            st.state, st.reason = "lost", f"its local pool {meta['pool']} ended before starting it"
        elif not meta.get("executor"):  # a work folder nothing else names, never started
            st.state, st.reason = "interrupted", "a work folder without a row, a submission or a live process"
        else:
            st.state = "pending"
        out.append(st)
    return out, corrupt
