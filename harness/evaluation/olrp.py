r"""Optimal Localisation-Recall-Precision error (oLRP), box and mask.

Definition (Oksuz et al., "Localization Recall Precision (LRP): A New Performance Metric for Object
Detection", ECCV 2018; "One Metric to Measure them All: Localisation Recall Precision (LRP) for
Evaluating Visual Detection Tasks", TPAMI 2021), with the TP validation threshold τ = 0.5:

For one class, let X be its ground truths and Y_s the detections with score ≥ s. Match Y_s to X (below);
a matched pair with IoU ≥ τ is a true positive (TP), an unmatched detection a false positive (FP) and an
unmatched ground truth a false negative (FN). Then

.. math::

    \mathrm{LRP}(X, Y_s) = \frac{1}{N_{TP} + N_{FP} + N_{FN}}
        \Big( \sum_{i \in TP} \frac{1 - \mathrm{IoU}(x_i, y_i)}{1 - \tau} + N_{FP} + N_{FN} \Big)

which lies in [0, 1] (each TP costs at most 1, each FP and FN exactly 1; N_TP + N_FN = |X|), is 0 only
for a perfect result and 1 when nothing is detected. The class's optimal LRP is the minimum over score
thresholds, ``oLRP = min_s LRP(X, Y_s)`` (s runs over the class's detection scores; keeping no detection,
LRP = 1, is a candidate). Its components at the optimal threshold s* are

- ``oLRP_loc = (1 / N_TP) Σ_TP (1 − IoU)`` — mean IoU error of the TPs (not divided by 1 − τ: the unit the
  papers report), NaN when s* keeps no TP;
- ``oLRP_FP = N_FP / (N_TP + N_FP)`` — 1 − precision, NaN when s* keeps no detection;
- ``oLRP_FN = N_FN / |X|`` — 1 − recall.

The dataset's values (the papers' moLRP and its components) are means over the classes that have ground
truth (classes without ground truth are skipped); a component undefined for a class (NaN above) is left
out of its mean. When several thresholds give the same minimum the highest one (fewest detections) is
taken. Detections with equal scores enter or leave together.

Matching is COCO's: per image and class, detections in decreasing score (ties: input order) each take the
unmatched ground truth of highest IoU ≥ τ, preferring regular over ignored ones. Ignored ground truth is
what AP ignores (:func:`~harness.evaluation.inputs.load_ground_truth` sets the flag): COCO kind, a crowd
(``iscrowd``, matched by intersection over the detection's area, any number of times), pycocotools
overwriting a file's own ``ignore`` flag with ``iscrowd``; LVIS kind, the ``ignore`` flag, as lvis-api
(no crowds there). A detection matched to ignored ground truth, and it itself, count nowhere. COCO kind: at most 100 detections
per image and class (COCO's limit). LVIS kind (federated, as LVIS AP): at most 300 detections per image;
a detection of a category neither annotated in the image nor listed in its ``neg_category_ids`` is not
evaluated; an unmatched detection of a category in ``not_exhaustive_category_ids`` is ignored.

Written from the papers' definitions above; the tests check it on cases computed by hand.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness.evaluation.inputs import GroundTruth, limit_per_image

TAU = 0.5
COCO_MAX_DETS_PER_CLASS = 100
LVIS_MAX_DETS_PER_IMAGE = 300


@dataclass(frozen=True)
class ClassLRP:
    """oLRP of one class and the counts at its optimal threshold (``threshold`` = inf: keep nothing)."""

    category_id: int
    olrp: float
    loc: float
    fp: float
    fn: float
    threshold: float
    n_tp: int
    n_fp: int
    n_fn: int
    n_gt: int


@dataclass(frozen=True)
class OLRPResult:
    """Means over classes with ground truth (see the module docstring) and the per-class values."""

    olrp: float
    loc: float
    fp: float
    fn: float
    per_class: dict
    tau: float = TAU

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}oLRP": self.olrp, f"{prefix}oLRP_loc": self.loc, f"{prefix}oLRP_FP": self.fp, f"{prefix}oLRP_FN": self.fn}


def lrp_error(tp_ious, n_fp: int, n_fn: int, tau: float = TAU) -> float:
    """LRP of one detection set from its TP IoUs and its FP / FN counts (1 when there is nothing at all)."""
    tp_ious = np.asarray(tp_ious, dtype=np.float64)
    total = len(tp_ious) + n_fp + n_fn
    if total == 0:
        return 0.0
    return float((np.sum(1.0 - tp_ious) / (1.0 - tau) + n_fp + n_fn) / total)


def optimal_lrp(scores, tp_ious, n_gt: int, tau: float = TAU, category_id: int = 0) -> ClassLRP:
    """oLRP of one class from its evaluated detections: ``scores`` and, per detection, the IoU with its
    matched ground truth when it is a TP or NaN when it is a FP (ignored detections left out); ``n_gt``
    ground truths (not ignored). Requires ``n_gt > 0``."""
    if n_gt <= 0:
        raise ValueError("oLRP needs at least one ground truth")
    scores = np.asarray(scores, dtype=np.float64)
    ious = np.asarray(tp_ious, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, ious = scores[order], ious[order]
    is_tp = ~np.isnan(ious)
    tp = np.concatenate([[0], np.cumsum(is_tp)])
    fp = np.concatenate([[0], np.cumsum(~is_tp)])
    loc = np.concatenate([[0.0], np.cumsum(np.where(is_tp, 1.0 - np.nan_to_num(ious), 0.0))])
    # a threshold keeps a prefix that ends where the score changes (ties enter together); k = 0 keeps none
    n = len(scores)
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) + 1 if n else np.array([], dtype=int)
    cuts = np.concatenate([[0], ends]).astype(int)
    fn = n_gt - tp[cuts]
    lrp = (loc[cuts] / (1.0 - tau) + fp[cuts] + fn) / (n_gt + fp[cuts])
    best = int(np.argmin(lrp))  # first minimum: the highest threshold
    k = int(cuts[best])
    n_tp, n_fp, n_fn = int(tp[k]), int(fp[k]), int(n_gt - tp[k])
    return ClassLRP(
        category_id=category_id,
        olrp=float(lrp[best]),
        loc=float(loc[k] / n_tp) if n_tp else math.nan,
        fp=float(n_fp / k) if k else math.nan,
        fn=float(n_fn / n_gt),
        threshold=float(scores[k - 1]) if k else math.inf,
        n_tp=n_tp,
        n_fp=n_fp,
        n_fn=n_fn,
        n_gt=int(n_gt),
    )


def _geometry(items: list[dict], iou_type: str):
    if iou_type == "bbox":
        return [list(x["bbox"]) for x in items]
    return [{"size": x["segmentation"]["size"], "counts": x["segmentation"]["counts"].encode("ascii")} for x in items]


def _match_image_class(gts: list[dict], dets: list[dict], iou_type: str, tau: float, lvis_not_exhaustive: bool):
    """COCO greedy matching in one image for one class. Returns (number of regular ground truths,
    [(score, iou or NaN for FP)] for the detections that count)."""
    from pycocotools import mask as mask_utils

    ignore = [bool(g["ignore"]) for g in gts]  # load_ground_truth's rule: iscrowd (COCO), ignore (LVIS)
    order_g = sorted(range(len(gts)), key=lambda i: ignore[i])  # regular first (stable)
    gts = [gts[i] for i in order_g]
    ignore = [ignore[i] for i in order_g]
    crowd = [int(bool(g.get("iscrowd", 0))) for g in gts]
    n_gt = ignore.count(False)
    if not dets:
        return n_gt, []
    if gts:
        ious = np.asarray(mask_utils.iou(_geometry(dets, iou_type), _geometry(gts, iou_type), crowd), dtype=np.float64)
        ious = ious.reshape(len(dets), len(gts))
    else:
        ious = np.zeros((len(dets), 0))
    matched = [False] * len(gts)
    out = []
    for di, d in enumerate(dets):
        best, m = min(tau, 1 - 1e-10), -1
        for gi in range(len(gts)):
            if matched[gi] and not crowd[gi]:
                continue
            if m > -1 and not ignore[m] and ignore[gi]:
                break  # already matched a regular ground truth; only ignored ones remain
            if ious[di, gi] < best:
                continue
            best, m = ious[di, gi], gi
        if m == -1:
            if lvis_not_exhaustive:
                continue  # unmatched detection of a not exhaustively annotated category: ignored
            out.append((d["score"], math.nan))
            continue
        matched[m] = True
        if ignore[m]:
            continue
        out.append((d["score"], float(ious[di, m])))
    return n_gt, out


def olrp_from_checked(gt: GroundTruth, dets: list[dict], iou_type: str = "bbox", tau: float = TAU) -> OLRPResult:
    """oLRP on inputs already read by :func:`~harness.evaluation.inputs.load_ground_truth` and
    :func:`~harness.evaluation.inputs.load_detections`."""
    if not 0.0 <= tau < 1.0:
        raise ValueError("tau must be in [0, 1)")
    lvis = gt.kind == "lvis"
    if lvis:
        dets = limit_per_image(dets, LVIS_MAX_DETS_PER_IMAGE)
    gts_by = defaultdict(list)
    for a in gt.data["annotations"]:
        gts_by[a["image_id"], a["category_id"]].append(a)
    dets_by = defaultdict(list)
    for d in dets:
        dets_by[d["image_id"], d["category_id"]].append(d)
    present = defaultdict(set)
    for img_id, cat_id in gts_by:
        present[img_id].add(cat_id)
    n_gt = defaultdict(int)
    evaluated = defaultdict(list)
    for key in sorted(set(gts_by) | set(dets_by)):
        img_id, cat_id = key
        ds = sorted(dets_by.get(key, []), key=lambda d: -d["score"])  # stable: ties keep input order
        not_exhaustive = False
        if lvis:
            img = gt.images[img_id]
            if cat_id not in present[img_id] and cat_id not in img["neg_category_ids"]:
                ds = []  # federated: no information about this category in this image
            not_exhaustive = cat_id in img["not_exhaustive_category_ids"]
        else:
            ds = ds[:COCO_MAX_DETS_PER_CLASS]
        g, rows = _match_image_class(gts_by.get(key, []), ds, iou_type, tau, not_exhaustive)
        n_gt[cat_id] += g
        evaluated[cat_id].extend(rows)
    per_class = {}
    for cat_id in sorted(gt.categories):
        if n_gt[cat_id] == 0:
            continue
        rows = evaluated[cat_id]
        per_class[cat_id] = optimal_lrp([r[0] for r in rows], [r[1] for r in rows], n_gt[cat_id], tau, cat_id)
    if not per_class:
        return OLRPResult(math.nan, math.nan, math.nan, math.nan, {}, tau)

    def mean(values):
        v = [x for x in values if not math.isnan(x)]
        return float(np.mean(v)) if v else math.nan

    cls = list(per_class.values())
    return OLRPResult(
        olrp=mean([c.olrp for c in cls]),
        loc=mean([c.loc for c in cls]),
        fp=mean([c.fp for c in cls]),
        fn=mean([c.fn for c in cls]),
        per_class=per_class,
        tau=tau,
    )


def olrp(gt, dets, kind: str = "coco", iou_type: str = "bbox", tau: float = TAU) -> OLRPResult:
    """oLRP of detections (path or list, COCO results format) against ground truth (path or dict)."""
    from harness.evaluation.inputs import load_detections, load_ground_truth

    checked = load_ground_truth(gt, kind, (iou_type,))
    return olrp_from_checked(checked, load_detections(dets, checked, (iou_type,)), iou_type, tau)
