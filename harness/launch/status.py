"""The state of every run of an experiment, from its rows, manifest, locks and (on SLURM) the queue.

States: ``running`` (a live process holds the run's lock, or its SLURM job runs); ``pending``
(submitted, not started: queued in SLURM, held there, or in a live local pool); ``done``; ``stale``
(done, but its row's fingerprint differs from what the current code builds for it: the reason says what
changed, e.g. "loss module examples/quality_focal.py changed"; a row without a fingerprint is stale with
"no fingerprint recorded"; :mod:`harness.run.fingerprint`); ``failed``
(with the reason from the row); ``interrupted`` (started, no row and nobody running it: a rerun resumes
it); ``lost`` (submitted, the job or its local pool ended without a row); ``missing`` (never submitted).
A run queued or running again is shown so even when an older row exists. Corrupt row files are listed
apart. Queues are asked through :mod:`harness.launch.scheduler`, as the plan asks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.launch.manifest import read_manifest
from harness.launch.scheduler import JobState, live_runs, slurm_states
from harness.rows import CorruptRow, read_rows
from harness.run.fingerprint import staleness
from harness.run.job import work_dir

STATES = ("done", "stale", "failed", "running", "pending", "interrupted", "lost", "missing")


@dataclass
class RunStatus:
    run_id: str
    detector: str
    loss: str
    seed: int
    state: str
    reason: str = ""
    job_id: str | None = None


def experiment_status(results_dir: str | Path, spec=None) -> tuple[list[RunStatus], list[CorruptRow]]:
    results_dir = Path(results_dir)
    spec_runs = {r.run_id: r for r in spec.runs()} if spec is not None else {}
    rows, corrupt = read_rows(results_dir, warn=False)
    by_id = {r["run_id"]: r for r in rows}
    manifest = read_manifest(results_dir)
    known: dict[str, dict] = dict(manifest["runs"])
    for r in rows:
        known.setdefault(r["run_id"], {"detector": r.get("detector"), "loss": r.get("loss"), "seed": r.get("seed")})
    if spec is not None:
        for run in spec.runs():
            known.setdefault(run.run_id, {"detector": run.detector, "loss": run.loss, "seed": run.seed, "never": True})
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
            st.reason = live[run_id].where
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
        else:
            st.state = "pending"
        out.append(st)
    return out, corrupt
