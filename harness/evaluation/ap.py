"""COCO AP (pycocotools) and LVIS AP (the ``lvis`` package) on checked inputs.

Both evaluators are driven in memory (no temporary files) and silenced (pycocotools prints to stdout).
Values are fractions in [0, 1]; a metric with nothing to average (no ground truth of that size or
frequency group) is NaN instead of the packages' -1. An empty detection list gives AP 0 wherever ground
truth exists (both packages crash on it when given a results list, so the result set is built here).

LVIS: the ``lvis`` 0.5.3 release uses ``np.float``, removed in numpy 1.24; :func:`numpy_float_alias`
restores it (as the builtin ``float``, which is what it was) for the duration of an evaluation only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np

from harness.evaluation.inputs import GroundTruth

COCO_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_AP_KEYS = COCO_AP_KEYS + ("APr", "APc", "APf")
LVIS_MAX_DETS = 300


@contextlib.contextmanager
def numpy_float_alias():
    """Make ``np.float`` exist (as ``float``) inside the block when this numpy lacks it."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            try:
                del np.float  # type: ignore[attr-defined]
            except AttributeError:
                pass


def _nan_if_negative(x) -> float:
    x = float(x)
    return math.nan if x < 0 else x


def _results_annotations(dets: list[dict], iou_type: str) -> list[dict]:
    """Detections as result annotations the way the packages' ``loadRes`` makes them: ids from 1, not
    crowd, area of the box (bbox) or of the mask (segm; the box is left out so that the size ranges use
    the mask area, as mmdet's CocoMetric does)."""
    from pycocotools import mask as mask_utils

    out = []
    for i, d in enumerate(dets):
        a = {"id": i + 1, "image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"], "iscrowd": 0}
        if iou_type == "bbox":
            a["bbox"] = list(d["bbox"])
            a["area"] = d["bbox"][2] * d["bbox"][3]
        else:
            rle = {"size": d["segmentation"]["size"], "counts": d["segmentation"]["counts"].encode("ascii")}
            a["segmentation"] = rle
            a["area"] = float(mask_utils.area(rle))
            a["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        out.append(a)
    return out


def _gt_for_segm(data: dict) -> dict:
    """Ground-truth copy whose (already compressed) RLE counts are bytes, as pycocotools wants."""
    anns = []
    for a in data["annotations"]:
        a = dict(a)
        seg = a.get("segmentation")
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
            a["segmentation"] = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        anns.append(a)
    return {**data, "annotations": anns}


def _per_class(precision: np.ndarray, cat_ids, gt: GroundTruth) -> list[dict]:
    """Each category's AP (all sizes, the most detections): the mean of its precision over IoU thresholds
    and recall points, as the summary AP averages it over classes; NaN for a class with no ground truth.
    ``precision``: the evaluator's [T, R, K, A(, M)] array, -1 where undefined."""
    out = []
    for k, cat_id in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1] if precision.ndim == 5 else precision[:, :, k, 0]
        p = p[p > -1]
        out.append({"id": int(cat_id), "name": str(gt.categories.get(cat_id, {}).get("name", cat_id)),
                    "AP": float(p.mean()) if p.size else math.nan})
    return out


def coco_ap(gt: GroundTruth, dets: list[dict], iou_type: str, per_class: list | None = None) -> dict:
    """COCO AP, AP50, AP75, APs, APm, APl (100 detections per image and class, pycocotools' COCOeval).
    ``per_class``: a list to extend with each category's AP (:func:`_per_class`)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = gt.fresh()
    if iou_type == "segm":
        data = _gt_for_segm(data)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": data["images"], "categories": data["categories"], "annotations": _results_annotations(dets, iou_type)}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if per_class is not None:
        per_class.extend(_per_class(ev.eval["precision"], ev.params.catIds, gt))
    return {k: _nan_if_negative(v) for k, v in zip(COCO_AP_KEYS, ev.stats[:6])}


def lvis_ap(gt: GroundTruth, dets: list[dict], iou_type: str, per_class: list | None = None) -> dict:
    """LVIS AP, AP50, AP75, APs, APm, APl, APr, APc, APf (federated: the ``lvis`` package's LVISEval;
    ``dets`` should already be limited to 300 per image). ``per_class``: as :func:`coco_ap`'s."""
    from lvis import LVIS, LVISEval, LVISResults

    class _GT(LVIS):
        def __init__(self, dataset):  # noqa: D401 - in-memory variant of LVIS(path)
            self.logger = logging.getLogger("lvis.lvis")
            self.dataset = dataset
            self._create_index()

    class _Results(LVISResults):
        def __init__(self, dataset):
            self.logger = logging.getLogger("lvis.results")
            self.dataset = dataset
            self._create_index()

    data = gt.fresh()
    if iou_type == "segm":
        data = _gt_for_segm(data)
    lvis_gt = _GT(data)
    results = {**{k: v for k, v in data.items() if k != "annotations"}, "annotations": _results_annotations(dets, iou_type)}
    lvis_dt = _Results(results)
    with numpy_float_alias(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        ev = LVISEval(lvis_gt, lvis_dt, iou_type)
        ev.params.max_dets = LVIS_MAX_DETS
        ev.run()
    if per_class is not None:
        per_class.extend(_per_class(ev.eval["precision"], ev.params.cat_ids, gt))
    return {k: _nan_if_negative(ev.results[k]) for k in LVIS_AP_KEYS}
