"""COCO AP (pycocotools) and LVIS AP (the ``lvis`` package) on checked inputs.

Both evaluators are driven in memory (no temporary files) and silenced (pycocotools prints to stdout).
Values are fractions in [0, 1]; a metric with nothing to average (no ground truth of that size or
frequency group) is NaN instead of the packages' -1. An empty detection list gives AP 0 wherever ground
truth exists (both packages crash on it when given a results list, so the result set is built here).

COCO: pycocotools' ``COCOeval`` with one method replaced, :meth:`SkipUnmatchableCOCOeval.evaluateImg`
(pycocotools 2.0's matching, line for line, that first leaves out the detections whose best IoU with any
ground truth is below the threshold: they match nothing anyway, and a detector's many low-scored
detections are most of the loop's work). Same matches, same numbers (``tests/test_evaluation.py`` compares
every field of every image's result and the summary with the unmodified class); IoUs, accumulation and the
summary are pycocotools' own.

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


def skip_unmatchable_cocoeval():
    """pycocotools' ``COCOeval`` whose per-image matching skips the detections no ground truth can match
    (module docstring); a class made on first use, so that importing this module does not import
    pycocotools."""
    global _SKIPPING
    if _SKIPPING is not None:
        return _SKIPPING
    from pycocotools.cocoeval import COCOeval

    class SkipUnmatchableCOCOeval(COCOeval):
        def evaluateImg(self, imgId, catId, aRng, maxDet):
            """pycocotools 2.0's ``COCOeval.evaluateImg`` (the same statements, in the same order), except
            that at each IoU threshold the detections whose best IoU is below it are not looped over: the
            loop would set no match for them (it only takes a ground truth with IoU at least the threshold)."""
            p = self.params
            if p.useCats:
                gt = self._gts[imgId, catId]
                dt = self._dts[imgId, catId]
            else:
                gt = [_ for cId in p.catIds for _ in self._gts[imgId, cId]]
                dt = [_ for cId in p.catIds for _ in self._dts[imgId, cId]]
            if len(gt) == 0 and len(dt) == 0:
                return None
            for g in gt:
                if g["ignore"] or (g["area"] < aRng[0] or g["area"] > aRng[1]):
                    g["_ignore"] = 1
                else:
                    g["_ignore"] = 0
            # sort dt highest score first, sort gt ignore last
            gtind = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
            gt = [gt[i] for i in gtind]
            dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in dtind[0:maxDet]]
            iscrowd = [int(o["iscrowd"]) for o in gt]
            ious = self.ious[imgId, catId][:, gtind] if len(self.ious[imgId, catId]) > 0 else self.ious[imgId, catId]
            T = len(p.iouThrs)
            G = len(gt)
            D = len(dt)
            gtm = np.zeros((T, G))
            dtm = np.zeros((T, D))
            gtIg = np.array([g["_ignore"] for g in gt])
            dtIg = np.zeros((T, D))
            if not len(ious) == 0:
                best = np.asarray(ious).max(axis=1)[:D].tolist()  # each detection's best IoU (rows as dt)
                reach = [dind for dind, b in enumerate(best) if b >= min([min(p.iouThrs), 1 - 1e-10])]
                for tind, t in enumerate(p.iouThrs):
                    floor = min([t, 1 - 1e-10])
                    for dind in [dind for dind in reach if best[dind] >= floor]:  # the others match nothing
                        d = dt[dind]
                        iou = floor
                        m = -1
                        for gind, g in enumerate(gt):
                            if gtm[tind, gind] > 0 and not iscrowd[gind]:
                                continue
                            if m > -1 and gtIg[m] == 0 and gtIg[gind] == 1:
                                break
                            if ious[dind, gind] < iou:
                                continue
                            iou = ious[dind, gind]
                            m = gind
                        if m == -1:
                            continue
                        dtIg[tind, dind] = gtIg[m]
                        dtm[tind, dind] = gt[m]["id"]
                        gtm[tind, m] = d["id"]
            a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, len(dt)))
            dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
            return {
                "image_id": imgId,
                "category_id": catId,
                "aRng": aRng,
                "maxDet": maxDet,
                "dtIds": [d["id"] for d in dt],
                "gtIds": [g["id"] for g in gt],
                "dtMatches": dtm,
                "gtMatches": gtm,
                "dtScores": [d["score"] for d in dt],
                "gtIgnore": gtIg,
                "dtIgnore": dtIg,
            }

    _SKIPPING = SkipUnmatchableCOCOeval
    return _SKIPPING


_SKIPPING = None


def coco_ap(gt: GroundTruth, dets: list[dict], iou_type: str, per_class: list | None = None) -> dict:
    """COCO AP, AP50, AP75, APs, APm, APl (100 detections per image and class, pycocotools' COCOeval).
    ``per_class``: a list to extend with each category's AP (:func:`_per_class`)."""
    from pycocotools.coco import COCO

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
        ev = skip_unmatchable_cocoeval()(coco_gt, coco_dt, iou_type)
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
