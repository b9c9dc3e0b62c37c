"""From detections to one flat dict of metrics: COCO / LVIS AP and oLRP, box and mask.

``evaluate(gt, dets, kind="coco", iou_types=None)`` returns, for each IoU type ``t`` in
``("bbox", "segm")`` evaluated, the keys ``t_AP t_AP50 t_AP75 t_APs t_APm t_APl`` (LVIS also ``t_APr
t_APc t_APf``) and ``t_oLRP t_oLRP_loc t_oLRP_FP t_oLRP_FN``. All values are fractions in [0, 1]
(AP as pycocotools / lvis report it, not percent; lower is better for the oLRP family). A value with
nothing to average over (no ground truth of that size or frequency group; an oLRP component no class
defines) is NaN. Definitions: ``docs/data-evaluation.md`` and :mod:`harness.evaluation.olrp`.

Imports nothing of training: pycocotools, lvis and numpy only (the mmdet metric that feeds a run's
predictions here, ``HarnessMetric``, lives with the run: :mod:`harness.run.hooks`).
"""

from __future__ import annotations

from harness.evaluation.ap import COCO_AP_KEYS, LVIS_AP_KEYS, LVIS_MAX_DETS, coco_ap, lvis_ap, numpy_float_alias
from harness.evaluation.convert import (
    encode_mask,
    gt_to_detections,
    instances_to_coco,
    label_to_category_ids,
    predictions_to_coco,
    predictions_to_results,
)
from harness.evaluation.inputs import (
    IOU_TYPES,
    KINDS,
    EvaluationError,
    GroundTruth,
    limit_per_image,
    load_detections,
    load_ground_truth,
)
from harness.evaluation.olrp import TAU, ClassLRP, OLRPResult, lrp_error, olrp, olrp_from_checked, optimal_lrp

OLRP_KEYS = ("oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")


def metric_keys(kind: str = "coco", iou_types=IOU_TYPES) -> list[str]:
    """The keys :func:`evaluate` returns, in order."""
    ap = LVIS_AP_KEYS if kind == "lvis" else COCO_AP_KEYS
    return [f"{t}_{k}" for t in iou_types for k in ap + OLRP_KEYS]


def _detections_have_masks(dets) -> bool:
    return isinstance(dets, list) and all(isinstance(d, dict) and d.get("segmentation") is not None for d in dets)


def evaluate(gt, dets, kind: str = "coco", iou_types=None, tau: float = TAU, per_class: dict | None = None) -> dict:
    """Metrics of detections ``dets`` (COCO results list, or a path to its JSON) against ground truth
    ``gt`` (COCO / LVIS v1 annotation dict, or a path).

    ``kind``: ``"coco"`` (pycocotools COCOeval, 100 detections per image and class) or ``"lvis"`` (LVIS's
    federated LVISEval, 300 detections per image, with APr / APc / APf). ``iou_types``: any of
    ``"bbox"``, ``"segm"``; ``None`` means box, plus mask when the ground truth and every detection carry
    a segmentation. Raises :class:`EvaluationError` (one-line message) on bad input. An empty detection
    list scores AP 0 and oLRP 1 wherever there is ground truth. ``per_class``: a dict to fill with each
    IoU type's AP per category, ``{t: [{"id", "name", "AP"}, ...]}`` (NaN for a category without ground
    truth), from the same evaluation.
    """
    if kind not in KINDS:
        raise EvaluationError(f"unknown kind {kind!r}; choose coco or lvis")
    source = None
    if isinstance(dets, str) or hasattr(dets, "__fspath__"):
        from harness.evaluation.inputs import _load_json

        source = str(dets)
        dets = _load_json(dets, "detections")
    checked = None
    if iou_types is None:
        checked = load_ground_truth(gt, kind, ("bbox",))
        iou_types = ("bbox", "segm") if checked.has_segm and _detections_have_masks(dets) else ("bbox",)
        if "segm" in iou_types:
            checked = None  # read again with the masks checked and encoded
    if isinstance(iou_types, str):
        iou_types = (iou_types,)
    iou_types = tuple(iou_types)
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise EvaluationError(f"unknown IoU type {bad[0] if bad else '(none)'!r}; choose bbox or segm")
    if checked is None:
        checked = load_ground_truth(gt, kind, iou_types)
    detections = load_detections(dets, checked, iou_types, source=source)
    if kind == "lvis":
        detections = limit_per_image(detections, LVIS_MAX_DETS)
    out: dict = {}
    for t in iou_types:
        classes = per_class.setdefault(t, []) if per_class is not None else None
        ap = lvis_ap(checked, detections, t, classes) if kind == "lvis" else coco_ap(checked, detections, t, classes)
        out.update({f"{t}_{k}": v for k, v in ap.items()})
        out.update(olrp_from_checked(checked, detections, t, tau).as_dict(prefix=f"{t}_"))
    return out


__all__ = [
    "COCO_AP_KEYS",
    "ClassLRP",
    "EvaluationError",
    "GroundTruth",
    "IOU_TYPES",
    "KINDS",
    "LVIS_AP_KEYS",
    "OLRPResult",
    "OLRP_KEYS",
    "TAU",
    "encode_mask",
    "evaluate",
    "gt_to_detections",
    "instances_to_coco",
    "label_to_category_ids",
    "load_detections",
    "load_ground_truth",
    "lrp_error",
    "metric_keys",
    "numpy_float_alias",
    "olrp",
    "olrp_from_checked",
    "optimal_lrp",
    "predictions_to_coco",
    "predictions_to_results",
]
