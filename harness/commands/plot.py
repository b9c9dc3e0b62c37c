"""Plots of an experiment's results: a grouped bar chart of one metric per detector and loss (mean ±
std over seeds, the published number as a dashed line, failed and missing cells labelled) and the
training-loss curves of every cell.

`harness plot results/<experiment> [--metric bbox_AP] [--out DIR]` writes PNGs into
results/<experiment>/plots/ (or DIR) and prints their paths. See docs/tables.md.
"""

from __future__ import annotations

from pathlib import Path

NAME = "plot"
HELP = "bar chart of a metric and training-loss curves (PNG) into results/<experiment>/plots/"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", help="results/<experiment>")
    parser.add_argument("--metric", help="metric of the bar chart (default bbox_AP, or segm_AP when no run has box AP)")
    parser.add_argument("--out", help="folder to write into (default results/<experiment>/plots)")
    parser.add_argument("--spec", help="the experiment's spec, to show its runs never submitted as missing")


def run(args) -> int:
    from harness.commands.table import load
    from harness.results.plots import write_plots

    folder, _, rows, tset = load(args)
    out = Path(args.out) if args.out else folder / "plots"
    for path in write_plots(rows, tset, out, title=folder.name).values():
        print(path)
    return 0
