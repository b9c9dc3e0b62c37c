"""Pre-fetch the backbone checkpoints a spec's runs start from (run it on a login node with internet).

Downloads each ``torchvision://`` ImageNet checkpoint the spec's cells need into torch's hub cache
(``$TORCH_HOME/hub/checkpoints``), where mmengine's loader finds it on the compute nodes (give them the
same ``TORCH_HOME``); a ``backbone_init`` path is only checked (put the file there). Without a spec: every
ImageNet checkpoint of the paper profile. ``--check`` downloads nothing and exits 1 when something is
missing or corrupt. A ``torchvision://`` file whose sha256 does not start with the hash its name carries
(a truncated or corrupt download) is reported, not replaced: delete it and run again. Exit 1 when a
download fails or a file is missing or corrupt; 2 for a bad spec.
"""

from __future__ import annotations

NAME = "weights"
HELP = "download into torch's cache the backbone checkpoints a spec needs (run on a login node)"


def add_arguments(parser) -> None:
    parser.add_argument("spec", nargs="?", help="experiment spec (default: every ImageNet checkpoint of the paper profile)")
    parser.add_argument("--check", action="store_true", help="download nothing; exit 1 when a checkpoint is missing or corrupt")


def run(args) -> int:
    from harness.commands import UsageError
    from harness.detectors import weights

    if args.spec:
        from harness.experiments.spec import SpecError, load_spec

        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        items = weights.needed(spec.runs())
    else:
        items = weights.paper_checkpoints()
    if not items:
        print("nothing to fetch: every run trains its backbone from scratch")
        return 0
    failed = 0
    for item in items:
        problem = item.problem(args.spec)
        if problem is None:
            print(f"present  {item.checkpoint}  {item.local_path}")
            continue
        if item.present():  # there, but not what its name says
            print(f"corrupt  {problem}")
            failed += 1
            continue
        if args.check or not item.is_torchvision:
            print(f"missing  {problem}")
            failed += 1
            continue
        try:
            path = weights.fetch(item)
        except weights.WeightsError as exc:
            print(f"failed   {exc}")
            failed += 1
            continue
        print(f"fetched  {item.checkpoint}  {path}")
    return 1 if failed else 0
