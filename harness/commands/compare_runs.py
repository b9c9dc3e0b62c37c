"""Compare two result folders of one experiment cell by cell: each cell's seed mean before and after, the
paired difference with its 95 % interval, and whether it moved beyond seed noise
(:mod:`harness.results.compare_runs`). Exits 1 when a cell got worse beyond seed noise.
"""

from __future__ import annotations

NAME = "compare-runs"
HELP = "did a change move the cells' metrics beyond seed noise? (two result folders, cell by cell)"


def add_arguments(parser) -> None:
    parser.add_argument("before", help="result folder before the change (results/<experiment> of a run)")
    parser.add_argument("after", help="result folder after it")
    parser.add_argument("--metric", action="append", default=None, metavar="METRIC",
                        help="metric to compare (repeatable; default bbox_AP and segm_AP where the runs have them)")
    parser.add_argument("--out", default=None, help="also write the table to <out>.md and <out>.csv")
    parser.add_argument("--before-label", default=None, help="what BEFORE is, for the report (default: its path)")
    parser.add_argument("--after-label", default=None, help="what AFTER is, for the report (default: its path)")


def run(args) -> int:
    from pathlib import Path

    from harness.commands import UsageError, check_out_prefix

    for folder in (args.before, args.after):
        if not (Path(folder) / "runs").is_dir():
            raise UsageError(f"{folder} has no runs/ folder: give a result folder of an experiment "
                             "(results/<experiment>, where its runs/ rows are)")
    if args.out:
        check_out_prefix(args.out)
    from harness.files import prefixed, write_text_atomic
    from harness.results.compare_runs import WORSE, UnknownMetric, compare, to_markdown

    try:
        table = compare(args.before, args.after, args.metric)
    except UnknownMetric as exc:
        raise UsageError(str(exc)) from None
    if table.empty:
        raise UsageError("no finished run with these metrics in either folder: nothing to compare")
    text = to_markdown(table, args.before_label or args.before, args.after_label or args.after)
    print(text, end="")
    if args.out:
        write_text_atomic(prefixed(args.out, ".md"), f"# Cells before and after\n\n{text}")
        write_text_atomic(prefixed(args.out, ".csv"), table.to_csv(index=False))
        print(f"wrote {args.out}.md and {args.out}.csv")
    return 1 if (table["verdict"] == WORSE).any() else 0
