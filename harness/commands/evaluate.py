"""Evaluate detections (COCO results JSON) against COCO / LVIS ground truth; print the metrics as JSON.

Prints one JSON object: for each IoU type t, t_AP t_AP50 t_AP75 t_APs t_APm t_APl (LVIS: also t_APr t_APc
t_APf) and t_oLRP t_oLRP_loc t_oLRP_FP t_oLRP_FN, as fractions in [0, 1]; a metric with nothing to
average over is null. Without --iou-type: bbox, plus segm when the ground truth and every detection
carry a segmentation. Definitions: docs/data-evaluation.md.
"""

from __future__ import annotations

import json
import math

NAME = "evaluate"
HELP = "COCO / LVIS AP and oLRP of a detections JSON against a ground-truth JSON"


def add_arguments(parser) -> None:
    parser.add_argument("--gt", required=True, metavar="GT.json", help="ground truth: COCO or LVIS v1 annotation file")
    parser.add_argument("--dets", required=True, metavar="DETS.json", help="detections: a JSON list in the COCO results format")
    parser.add_argument("--kind", choices=("coco", "lvis"), default="coco", help="COCO (default) or LVIS (federated, APr/APc/APf) evaluation")
    parser.add_argument(
        "--iou-type", action="append", choices=("bbox", "segm"), dest="iou_types", metavar="bbox|segm",
        help="box or mask evaluation (repeatable; default bbox, plus segm when masks are given)",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the metrics JSON to FILE (atomically)")


def _jsonable(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


def run(args) -> int:
    from harness.commands import UsageError
    from harness.evaluation import EvaluationError, evaluate
    from harness.files import write_json_atomic

    if args.out is not None:  # checked before evaluating: never the inputs, never nothing
        from pathlib import Path

        if not args.out.strip():
            raise UsageError("--out needs a file name (leave --out out to print the metrics only)")
        inputs = [Path(p).resolve() for p in (args.gt, args.dets)]
        if Path(args.out).resolve() in inputs:
            raise UsageError(f"--out {args.out} is one of the inputs (--gt / --dets): it would overwrite it; "
                             "give another file")
        if Path(args.out).is_dir():
            raise UsageError(f"--out {args.out} is a folder: give a file name in it")
    iou_types = tuple(dict.fromkeys(args.iou_types)) if args.iou_types else None
    try:
        metrics = evaluate(args.gt, args.dets, kind=args.kind, iou_types=iou_types)
    except EvaluationError as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps(_jsonable(metrics), indent=2)
    if args.out:
        try:
            write_json_atomic(args.out, _jsonable(metrics))
        except OSError as exc:
            raise UsageError(f"cannot write {args.out}: {exc}") from None
    print(text)
    return 0
