"""Show the state of each run of an experiment: done, stale (what changed), running, pending, failed
(reason), interrupted, lost or missing, with counts; corrupt row files are reported.

A done run is `stale` when its row's fingerprint (the config, harness code, loss modules and package
versions it ran with) differs from what the current code builds for it; the reason says what changed
("loss module examples/quality_focal.py changed", "harness code changed (commit a -> b)", "mmdet 3.3.0 ->
3.3.1", "config changed"; "no fingerprint recorded" for rows from before fingerprints). `harness run`
leaves stale runs alone unless `--rerun-stale`.

`harness status results/<experiment>`; `--spec SPEC` also lists the spec's runs never submitted.
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
    from harness.launch.status import STATES, experiment_status

    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give results/<experiment> (run `harness run SPEC` first)")
    if not any((folder / name).exists() for name in ("runs", "manifest.json", "work")):
        raise UsageError(f"{folder} holds no results (no runs/, manifest.json or work/); give results/<experiment>, "
                         f"the folder `harness run SPEC` writes")
    spec = None
    if args.spec:
        from harness.experiments.spec import SpecError, load_spec

        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
    runs, corrupt = experiment_status(folder, spec)
    if args.json:
        print(json.dumps({"runs": [r.__dict__ for r in runs],
                          "corrupt": [{"path": str(c.path), "reason": c.reason} for c in corrupt]}, indent=1))
        return 0
    for r in runs:
        reason = f"  ({r.reason})" if r.reason else ""
        print(f"{r.state:<12} {r.detector or '?':<13} {r.loss or '?':<6} seed {r.seed}  {r.run_id}{reason}")
    counts = {s: sum(r.state == s for r in runs) for s in STATES}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
    for c in corrupt:
        print(f"corrupt row {c.path}: {c.reason} (left out of tables; delete it and rerun the spec)")
    return 0
