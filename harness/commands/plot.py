"""Plots of an experiment's results: per metric, every seed's value of each detector's losses with
their mean and spread (the loss the tables bold starred: best beyond seed noise), and the training-loss
curves of every cell.

`harness plot results/<experiment> [--metric bbox_AP] [--out DIR]` writes PNGs into
results/<experiment>/plots/ (or DIR) and prints their paths: a seeds plot for the metric and every main
metric the runs have, the curve grid and one curve figure per cell. See docs/tables.md.
"""

from __future__ import annotations

NAME = "plot"
HELP = "every seed's value per detector and loss, and training-loss curves (PNG) into results/<experiment>/plots/"


def add_arguments(parser) -> None:
    parser.add_argument("results_dir", help="results/<experiment>")
    parser.add_argument("--metric", help="metric plotted first (default bbox_AP, or segm_AP when no run has box AP)")
    parser.add_argument("--out", help="folder to write into (default results/<experiment>/plots)")
    parser.add_argument("--spec", help="the experiment's spec, to show its runs without a row as unfinished")
    parser.add_argument("--all-fingerprints", action="store_true",
                        help="also plot rows of older fingerprints (as harness table --all-fingerprints)")


def run(args) -> int:
    from harness.commands import UsageError
    from harness.commands.table import load, out_folder
    from harness.results.plots import write_plots

    folder, _, rows, tset = load(args, stale=True)  # the cells keep the rows the tables keep
    out = out_folder(args, folder, "plots", "the plots")
    try:
        written = write_plots(rows, tset, out, title=folder.name)
    except OSError as exc:
        raise UsageError(f"cannot write the plots into {out}: {exc}") from None
    for path in written.values():
        print(path)
    return 0
