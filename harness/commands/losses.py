"""List the registered losses and how a detector head calls each.

`--load MODULE` (repeatable) first imports an external loss module (dotted name or .py path) that
registers its loss(es) (a module name resolves from the current folder too, as under `python -m`);
`--json` prints machine-readable output.
"""

from __future__ import annotations

import json

NAME = "losses"
HELP = "list the registered losses (name, targets, balancing, defaults)"


def add_arguments(parser) -> None:
    parser.add_argument("--load", action="append", default=[], metavar="MODULE", help="import an external loss module first")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from harness.commands import load_loss_modules
    from harness.losses import LOSSES

    load_loss_modules(args.load)
    rows = [
        {
            "name": s.name,
            "summary": s.summary,
            "targets": s.targets,
            "ranking": s.ranking,
            "balancing": s.balancing,
            "uses_loc_errors": s.uses_loc_errors,
            "defaults": dict(s.defaults),
            "mmdet": dict(s.mmdet) if s.mmdet else None,
            "usage": s.usage,
            "module": s.module,
        }
        for s in sorted(LOSSES.values(), key=lambda s: s.name)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<8} {'targets':<8} {'ranking':<8} {'balancing':<13} {'defaults':<28} summary")
    for r in rows:
        defaults = ", ".join(f"{k}={v}" for k, v in r["defaults"].items()) or "-"
        print(f"{r['name']:<8} {r['targets']:<8} {str(r['ranking']).lower():<8} {r['balancing']:<13} {defaults:<28} {r['summary']}")
    return 0
