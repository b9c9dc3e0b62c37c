"""Show the state of each run of an experiment: done, stale (what changed), running, pending, failed
(reason), interrupted, lost or missing, with counts; corrupt row files are reported.

A done run is `stale` when its row's fingerprint (the config, harness code, loss modules and package
versions it ran with) differs from what the current code builds for it; the reason says what changed
("loss module examples/quality_focal.py changed", "harness code changed (commit a -> b)", "mmdet 3.3.0 ->
3.3.1", "config changed"; "no fingerprint recorded" for rows from before fingerprints). `harness run`
leaves stale runs alone unless `--rerun-stale`.

A run the spec no longer has (it was edited since the run) is `superseded`: its row stays in the folder
and is left out of the tables. Which runs are current: `--spec SPEC` when given, else the spec as last
run (`harness run` records its runs in results/<experiment>/spec.json), else the latest row of each cell
and seed (folders from before the record).

`harness status results/<experiment> [--spec SPEC] [--json]`. Exit code: 0 when no current run failed,
was lost or interrupted and no row file is corrupt (runs may still be queued, running, missing or
stale); 1 otherwise (each such run is listed with its reason); 2 for bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

NAME = "status"
HELP = "show each run of an experiment: done, stale, running, pending, failed (reason)"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", help="results/<experiment>")
    parser.add_argument("--spec", help="the experiment's spec, to list runs never submitted")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from harness.commands import UsageError
    from harness.launch.status import STATES, TROUBLE, experiment_status
    from harness.rows import current_runs

    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give results/<experiment> (run `harness run SPEC` first)")
    if not any((folder / name).exists() for name in ("runs", "manifest.json", "work", "spec.json")):
        raise UsageError(f"{folder} holds no results (no runs/, manifest.json, spec.json or work/); give results/<experiment>, "
                         f"the folder `harness run SPEC` writes")
    spec = None
    if args.spec:
        from harness.experiments.spec import SpecError, load_spec

        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
    current = current_runs(folder, spec)
    runs, corrupt = experiment_status(folder, spec, current)
    trouble = 1 if corrupt or any(r.state in TROUBLE for r in runs) else 0
    if args.json:
        print(json.dumps({"current_from": current[1], "runs": [r.__dict__ for r in runs],
                          "corrupt": [{"path": str(c.path), "reason": c.reason} for c in corrupt]}, indent=1))
        return trouble
    for r in runs:
        reason = f"  ({r.reason})" if r.reason else ""
        print(f"{r.state:<12} {r.detector or '?':<13} {r.loss or '?':<6} seed {r.seed}  {r.run_id}{reason}")
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
    print(f"which runs are current: {current[1]}")
    for c in corrupt:
        print(f"corrupt row {c.path}: {c.reason} (left out of tables; delete it and rerun the spec)")
    return trouble
