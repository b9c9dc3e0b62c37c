"""Datasets: write the synthetic benchmark, check a COCO 2017 / LVIS v1 data root, inspect your own data.

`harness data synthetic [--kind coco|lvis] [--out DIR]` writes the generated dataset to DIR (atomically;
without --out it is generated into the cache, $HARNESS_DATA_DIR or <repo>/data, and reused when present).
`harness data check coco|lvis [--root DIR]` checks a real data root (else $HARNESS_COCO_ROOT /
$HARNESS_LVIS_ROOT) and prints the resolved paths.
`harness data inspect SPEC|ANN.json [--json]` prints what to know of COCO-format data before comparing
losses on it (images, instances per class, objects per image, box sizes, masks, crowd regions, the instances
mmdet leaves out of training; of a spec, also the number of classes the runs train, every head built for it)
and every problem the checks before training would refuse (then exit 2). Layouts and checks:
docs/data-evaluation.md.
"""

from __future__ import annotations

import json
import time

NAME = "data"
HELP = "write the synthetic dataset, check a COCO / LVIS data root, or inspect your own COCO-format data"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    syn = sub.add_parser("synthetic", help="write the generated dataset", description=__doc__)
    syn.add_argument("--kind", choices=("coco", "lvis"), default="coco", help="annotation format and categories (default coco)")
    syn.add_argument("--out", metavar="DIR", help="folder to write (default: the cache, reused when present)")
    syn.add_argument("--force", action="store_true", help="replace --out DIR when it holds something else")
    syn.add_argument("--seed", type=int, help="random seed (default 0)")
    syn.add_argument("--train-images", type=int, metavar="N", help="train split size (default coco 400, lvis 1200)")
    syn.add_argument("--val-images", type=int, metavar="N", help="val split size (default coco 100, lvis 200)")
    syn.add_argument("--image-size", type=int, metavar="PX", help="side of the square images (default 128)")
    syn.add_argument("--json", action="store_true", help="print the summary as JSON")
    chk = sub.add_parser("check", help="check a COCO 2017 / LVIS v1 data root", description=__doc__)
    chk.add_argument("dataset", choices=("coco", "lvis"))
    chk.add_argument("--root", metavar="DIR", help="data root (default $HARNESS_COCO_ROOT / $HARNESS_LVIS_ROOT)")
    ins = sub.add_parser("inspect", help="summarise and check COCO-format data (a spec's coco_format datasets, "
                                         "or one annotation file)", description=__doc__)
    ins.add_argument("target", metavar="SPEC|ANN.json", help="an experiment spec (.yaml) or a COCO annotation file")
    ins.add_argument("--json", action="store_true", help="print the summary as JSON")


def _params(args):
    from harness.data import SyntheticParams

    overrides = {
        k: v
        for k, v in {
            "seed": args.seed,
            "train_images": args.train_images,
            "val_images": args.val_images,
            "image_size": args.image_size,
        }.items()
        if v is not None
    }
    p = SyntheticParams.default(args.kind, **overrides)
    p.validate()
    return p


def _synthetic(args) -> int:
    from pathlib import Path

    from harness.commands import UsageError
    from harness.data import dataset_paths, ensure_synthetic, generate_synthetic, summary
    from harness.data.synthetic import is_current

    try:
        params = _params(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    t0 = time.perf_counter()
    if args.out:
        out = Path(args.out).expanduser()
        if is_current(out, params) and not args.force:
            paths, status = dataset_paths(out), "up to date"
        else:
            if out.exists() and not out.is_dir():
                raise UsageError(f"--out {out} exists and is not a folder")
            if out.is_dir() and any(out.iterdir()) and not args.force:
                raise UsageError(f"--out {out} exists and holds something else; pass --force to replace it")
            try:
                paths = generate_synthetic(params, out, overwrite=args.force)
            except OSError as exc:
                raise UsageError(f"cannot write {out}: {exc}") from None
            status = "wrote"
    else:
        paths, status = ensure_synthetic(params.kind, params), "ready"
    info = summary(paths)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    line = (
        f"{status}: synthetic {info['kind']} dataset at {info['root']}: {info['train_images']} train / "
        f"{info['val_images']} val images, {info['train_instances']} / {info['val_instances']} instances, "
        f"{info['categories']} categories"
    )
    if "frequency" in info:
        f = info["frequency"]
        line += f" (rare {f['r']}, common {f['c']}, frequent {f['f']})"
    print(f"{line} [{info['seconds']:.1f} s]")
    print(f"  train: {paths.train_ann}")
    print(f"  val:   {paths.val_ann}")
    return 0


def _check(args) -> int:
    from harness.commands import UsageError
    from harness.data import DataRootError, real_paths

    try:
        paths = real_paths(args.dataset, args.root)
    except DataRootError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.dataset}: {paths.root}")
    for split in ("train", "val"):
        print(f"  {split}: {paths.ann_files[split]}  images: {paths.img_dir(split)}")
    return 0


# What a lone annotation file leaves unchecked: checks that need the spec's image folder and both splits.
NOT_CHECKED = ("not checked: whether the images it lists are on disk (a file alone names no image folder), nor its "
               "categories against the other split's; inspect a spec naming this file and its image folder "
               "(harness data inspect SPEC) to run every check before training")


def _inspect_targets(target: str, warnings: list[str]):
    """(dataset label, annotation file, problems, dataset entry) per file to inspect: a spec's coco_format
    splits (every check, images included; the entry with its last split, else None), or one file (label and
    entry None: its own checks only, :data:`NOT_CHECKED`). What can train but should be said goes to
    ``warnings``."""
    from pathlib import Path

    from harness.commands import UsageError
    from harness.data.coco_format import SPLITS, check_dataset, check_file, read_annotations, DataProblems
    from harness.experiments.spec import SpecError, load_spec

    path = Path(target)
    if not path.is_file():
        raise UsageError(f"{path} does not exist; give an experiment spec (.yaml) or a COCO annotation file (.json)")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            raise UsageError(str(exc)) from None
        own = [d for d in spec.datasets if d["kind"] == "coco_format"]
        if not own:
            raise UsageError(f"{path} names no coco_format dataset (inspect reads your own COCO-format data; "
                             f"its kinds: {', '.join(d['kind'] for d in spec.datasets)})")
        for dataset in own:
            problems = check_dataset(dataset, spec.path, warnings)
            for split in SPLITS:
                last = split == SPLITS[-1]
                yield (f"{dataset['name']} {split}", dataset[split]["ann"], problems if last else [],
                       dataset if last else None)
        return
    try:
        data = read_annotations(path)
    except DataProblems as exc:
        raise UsageError(str(exc)) from None
    yield None, str(path), check_file(data, path), None


def _trained_classes(dataset) -> dict | None:
    """The classes a spec's runs on this coco_format dataset train: the train file's categories in file
    order (:func:`harness.data.coco_format.coco_format_paths`), every head built for their count; ``None``
    when the train file cannot be read (the problems say why)."""
    from harness.data.coco_format import DataProblems, category_pairs, read_annotations

    try:
        pairs = category_pairs(read_annotations(dataset["train"]["ann"]))
    except DataProblems:
        return None
    return {"dataset": dataset["name"], "num_classes": len(pairs), "classes": [n for _, n in pairs]}


def _classes_line(c: dict) -> str:
    names = ", ".join(c["classes"][:5]) + (", ..." if len(c["classes"]) > 5 else "")
    return (f"{c['dataset']}: the runs train {c['num_classes']} classes (the train file's categories in file order: "
            f"{names}); every detector's head is built for {c['num_classes']} classes (num_classes)")


def _inspect(args) -> int:
    from harness.data.coco_format import DataProblems, inspect, inspection_lines, read_annotations

    report, problems, alone, classes, warnings = [], [], False, [], []
    for label, ann, found, dataset in _inspect_targets(args.target, warnings):
        alone = label is None
        problems += found
        try:
            info = inspect(read_annotations(ann))
        except DataProblems:
            info = None  # the problems say why
        trained = _trained_classes(dataset) if dataset is not None else None
        report.append({"dataset": label, "file": ann, "images_checked": not alone, "summary": info,
                       "classes_line": trained})
        if trained:
            classes.append(trained)
    if args.json:
        print(json.dumps({"inspected": [{k: v for k, v in item.items() if k != "classes_line"} for item in report],
                          "trained_classes": None if alone else classes, "problems": problems, "warnings": warnings,
                          "not_checked": NOT_CHECKED.removeprefix("not checked: ") if alone else None}, indent=2))
    else:
        for item in report:
            print(f"{item['dataset'] or 'annotation file'}: {item['file']}")
            lines = inspection_lines(item["summary"]) if item["summary"] else ["(cannot be read: see the problems)"]
            print("\n".join(f"  {line}" for line in lines))
            if item["classes_line"]:
                print(_classes_line(item["classes_line"]))
        if alone:
            print(NOT_CHECKED)
        for warning in warnings:
            print(f"warning: {warning}")
    if problems:
        from harness.commands import UsageError

        raise UsageError("\n".join(problems))
    if not args.json:
        print("no problems in the file itself (its images were not checked: inspect the spec for every check before training)" if alone
              else "no problems: the checks before training pass")
    return 0


def run(args) -> int:
    from harness.commands import UsageError

    if args.data_command == "synthetic":
        return _synthetic(args)
    if args.data_command == "check":
        return _check(args)
    if args.data_command == "inspect":
        return _inspect(args)
    raise UsageError("name an action: synthetic, check or inspect (harness data --help)")
