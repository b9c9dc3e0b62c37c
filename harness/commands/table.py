"""Paper-style tables of an experiment's results: detectors × losses for one metric, every cell's
change vs the detector's baseline loss beside the published number, and all metrics per cell.

`harness table results/<experiment> [--metric bbox_AP] [--format md|latex|csv|all] [--out DIR]`
writes the tables (default: every format into results/<experiment>/tables/) and prints them
(Markdown for md and all). Values are mean ± std (n) over seeds; a loss is bold only when it beats
every other loss of its detector beyond seed noise (paired t-test over seeds at 95 %). Failed,
unfinished and missing cells are shown as such; the summary line counts the rows other code, config or
versions made (stale: `harness status` says what changed). A cell keeps the rows of its newest fingerprint (the
code, config and versions of its latest run) and says how many older rows it left out;
`--all-fingerprints` counts them too and marks the cells that mix fingerprints (§). See docs/tables.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "table"
HELP = "paper-style tables of an experiment (Markdown, LaTeX, CSV) into results/<experiment>/tables/"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", help="results/<experiment>")
    parser.add_argument("--metric", help="metric of the detector × loss tables (default bbox_AP, or segm_AP "
                                         "when no run has box AP)")
    parser.add_argument("--format", choices=["md", "latex", "csv", "all"], default="all",
                        help="what to write (default all); md and all print Markdown, latex LaTeX, csv the cells CSV")
    parser.add_argument("--out", help="folder to write into (default results/<experiment>/tables)")
    parser.add_argument("--spec", help="the experiment's spec, to show its runs without a row as unfinished")
    parser.add_argument("--all-fingerprints", action="store_true",
                        help="also count rows of older fingerprints (other code, config or versions); cells that "
                             "mix fingerprints are marked § (default: each cell keeps its newest fingerprint's rows)")


def load(args, stale: bool = False):
    """The experiment of ``args.results_dir`` (frame, rows, table set) for the table and plot commands;
    bad input raises UsageError. ``stale``: also find the done rows the current code would build otherwise
    (each run's config built once, cached), counted in the tables' summary line."""
    from harness.commands import UsageError
    from harness.results.frame import load_experiment
    from harness.results.tables import TablesError, build_tables

    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give results/<experiment> (run `harness run SPEC` first)")
    spec = None
    if getattr(args, "spec", None):
        from harness.experiments.spec import SpecError, load_spec

        try:
            spec = load_spec(args.spec)
        except (SpecError, ImportError) as exc:
            raise UsageError(f"--spec {args.spec}: {exc}") from None
    found = None
    if stale:
        from harness.launch.plan import stale_runs

        found = stale_runs(folder, spec)
    frame, rows, corrupt = load_experiment(folder, spec, getattr(args, "all_fingerprints", False), found)
    if spec is not None:
        _check_spec_matches(folder, spec, args.spec, frame.attrs["experiments"])
    for c in corrupt:
        print(f"warning: corrupt row {c.path} left out: {c.reason}", file=sys.stderr)
    if frame.empty:
        raise UsageError(f"no result rows in {folder / 'runs'} and no submitted runs; run `harness run SPEC` first")
    try:
        tset = build_tables(frame, args.metric, len(corrupt))
    except TablesError as exc:
        raise UsageError(str(exc)) from None
    return folder, frame, rows, tset


def _check_spec_matches(folder: Path, spec, spec_arg: str, experiments: list[str]) -> None:
    """A ``--spec`` of another experiment than the folder's is a usage error (its runs would show as
    unfinished and the folder's rows as superseded). The folder's experiment is what its rows record, else
    what its manifest records (runs submitted, no row yet); a folder with neither takes any spec."""
    from harness.commands import UsageError

    if not experiments:
        from harness.launch.manifest import read_manifest

        named = read_manifest(folder).get("experiment")
        experiments = [str(named)] if named else []
    if experiments and spec.name not in experiments:
        theirs = " and ".join(repr(e) for e in experiments)
        raise UsageError(f"--spec {spec_arg} is experiment {spec.name!r} but {folder} holds the results of experiment "
                         f"{theirs}; give that experiment's spec, or the results folder of {spec.name!r} "
                         f"(results/{spec.name})")


def out_folder(args, folder: Path, default: str, what: str) -> Path:
    """The folder the table and plot commands write ``what`` into: ``--out`` or ``folder / default``. One
    that is a file (or lies under a file) is a usage error, raised before anything is written."""
    from harness.commands import UsageError
    from harness.files import file_in_the_way

    out = Path(args.out) if args.out else folder / default
    blocker = file_in_the_way(out)
    if blocker is not None:
        given = f"--out {out}" if args.out else f"{out} (the default folder)"
        fix = "give --out a folder (it is created when missing)" if args.out else "move that file away or give --out DIR"
        place = "is a file" if blocker == out else f"lies under {blocker}, which is a file"
        raise UsageError(f"{given} {place}, not a folder to write {what} into; {fix}")
    return out


def run(args) -> int:
    from harness.commands import UsageError
    from harness.results.tables import FORMATS, write_tables

    folder, frame, _, tset = load(args, stale=True)
    formats = FORMATS if args.format == "all" else (args.format,)
    out = out_folder(args, folder, "tables", "the tables")
    try:
        written = write_tables(tset, frame, out, formats, title=f"Results: {folder.name}")
    except OSError as exc:
        raise UsageError(f"cannot write the tables into {out}: {exc}") from None
    if args.format in ("md", "all"):
        print(tset.markdown(f"Results: {folder.name}"))
    elif args.format == "latex":
        print(tset.latex())
    else:
        print(written["cells.csv"].read_text(), end="")
    print(f"wrote {len(written)} files to {out}", file=sys.stderr)
    return 0
