"""oLRP against values derived by hand from the definition (τ = 0.5):

    LRP = (Σ_TP (1 − IoU) / (1 − τ) + N_FP + N_FN) / (N_TP + N_FP + N_FN),   oLRP = min over thresholds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.evaluation import EvaluationError, lrp_error, olrp, optimal_lrp

NAN = math.nan


def test_lrp_of_one_set():
    assert lrp_error([1.0, 1.0], 0, 0) == 0.0  # perfect
    assert lrp_error([], 0, 3) == 1.0  # nothing detected
    assert lrp_error([], 2, 3) == 1.0  # only false positives
    # one TP at IoU 0.8 (costs 0.2 / 0.5 = 0.4), one FP, one FN: (0.4 + 1 + 1) / 3
    assert lrp_error([0.8], 1, 1) == pytest.approx(2.4 / 3)
    # a TP at exactly τ costs as much as an FP or FN
    assert lrp_error([0.5], 0, 0) == pytest.approx(1.0)


def test_optimal_threshold_and_components():
    # two ground truths; detections in score order: TP (IoU 0.8), FP, TP (IoU 0.6)
    # keep none: 1; keep 1: (0.4 + 0 + 1) / 2 = 0.7; keep 2: (0.4 + 1 + 1) / 3 = 0.8;
    # keep 3: (0.4 + 0.8 + 1 + 0) / 3 = 0.7333 → optimum keeps the first: loc 0.2, FP 0, FN 1/2
    r = optimal_lrp([0.7, 0.9, 0.8], [0.6, 0.8, NAN], n_gt=2)  # input order does not matter
    assert r.olrp == pytest.approx(0.7)
    assert (r.loc, r.fp, r.fn) == (pytest.approx(0.2), 0.0, 0.5)
    assert r.threshold == 0.9 and (r.n_tp, r.n_fp, r.n_fn, r.n_gt) == (1, 0, 1, 2)


def test_tied_scores_enter_together():
    # a TP (IoU 1) and an FP with the same score cannot be separated: (0 + 1 + 0) / 2
    r = optimal_lrp([0.9, 0.9], [1.0, NAN], n_gt=1)
    assert r.olrp == 0.5 and r.fp == 0.5 and r.fn == 0.0 and r.loc == 0.0
    # with distinct scores the TP alone is kept: 0
    assert optimal_lrp([0.9, 0.8], [1.0, NAN], n_gt=1).olrp == 0.0


def test_only_false_positives_keep_nothing():
    # every threshold gives LRP 1; the highest (keep nothing) is taken: FP and loc undefined, FN 1
    r = optimal_lrp([0.9, 0.5], [NAN, NAN], n_gt=3)
    assert r.olrp == 1.0 and math.isnan(r.loc) and math.isnan(r.fp) and r.fn == 1.0
    assert r.threshold == math.inf and r.n_tp == 0 and r.n_fp == 0
    with pytest.raises(ValueError):
        optimal_lrp([0.5], [NAN], n_gt=0)


def _coco_gt(anns, cats=(1, 2, 3)):
    return {
        "images": [{"id": 1, "height": 100, "width": 100}],
        "categories": [{"id": c, "name": f"c{c}"} for c in cats],
        "annotations": [dict(a, id=i + 1, image_id=a.get("image_id", 1)) for i, a in enumerate(anns)],
    }


def _rect_rle(box, h=100, w=100):
    from harness.evaluation import encode_mask

    x, y, bw, bh = box
    m = np.zeros((h, w), bool)
    m[y : y + bh, x : x + bw] = True
    return encode_mask(m)


# class 1: g1 [0,0,10,10], g2 [20,20,10,10] and a crowd region [80,80,20,20];
# class 2: g3 [50,50,20,20]; class 3: no ground truth.
GT_ANNS = [
    {"category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
    {"category_id": 1, "bbox": [20, 20, 10, 10], "area": 100},
    {"category_id": 1, "bbox": [80, 80, 20, 20], "area": 400, "iscrowd": 1},
    {"category_id": 2, "bbox": [50, 50, 20, 20], "area": 400},
]
DETS = [
    {"category_id": 1, "bbox": [0, 0, 10, 8], "score": 0.9},  # IoU 80/100 = 0.8 with g1
    {"category_id": 1, "bbox": [60, 0, 10, 10], "score": 0.8},  # FP
    {"category_id": 1, "bbox": [20, 20, 10, 6], "score": 0.7},  # IoU 0.6 with g2
    {"category_id": 1, "bbox": [82, 82, 5, 5], "score": 0.95},  # inside the crowd region: ignored
    {"category_id": 2, "bbox": [52, 50, 20, 20], "score": 0.95},  # IoU 360/440 = 9/11 with g3
    {"category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.6},  # g3 taken already: FP
    {"category_id": 3, "bbox": [5, 5, 10, 10], "score": 0.99},  # class without ground truth: skipped
]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_hand_built_dataset(iou_type):
    gt = _coco_gt(GT_ANNS)
    dets = [dict(d, image_id=1) for d in DETS]
    if iou_type == "segm":  # the same rectangles as masks: the same IoUs
        for a in gt["annotations"]:
            a["segmentation"] = _rect_rle(a["bbox"])
        for d in dets:
            d["segmentation"] = _rect_rle(d["bbox"])
    r = olrp(gt, dets, kind="coco", iou_type=iou_type)
    # class 1 as in test_optimal_threshold_and_components: 0.7 (loc 0.2, FP 0, FN 0.5)
    c1 = r.per_class[1]
    assert (c1.olrp, c1.loc, c1.fp, c1.fn) == (pytest.approx(0.7), pytest.approx(0.2), 0.0, 0.5)
    # class 2: keep 1: (2/11) / 0.5 = 4/11; keep 2: (4/11 + 1) / 2 → 4/11, loc 2/11
    c2 = r.per_class[2]
    assert (c2.olrp, c2.loc, c2.fp, c2.fn) == (pytest.approx(4 / 11), pytest.approx(2 / 11), 0.0, 0.0)
    assert set(r.per_class) == {1, 2}
    assert r.olrp == pytest.approx((0.7 + 4 / 11) / 2)
    assert r.loc == pytest.approx((0.2 + 2 / 11) / 2)
    assert (r.fp, r.fn) == (0.0, 0.25)


def test_perfect_and_empty():
    gt = _coco_gt(GT_ANNS)
    perfect = [{"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in GT_ANNS if not a.get("iscrowd")]
    r = olrp(gt, perfect)
    assert (r.olrp, r.loc, r.fp, r.fn) == (0.0, 0.0, 0.0, 0.0)
    r = olrp(gt, [])
    assert r.olrp == 1.0 and r.fn == 1.0 and math.isnan(r.loc) and math.isnan(r.fp)


def test_lvis_federated_rules():
    # image 1: a cat-1 box; cat 3 is verified absent (negative); cat 1 is not exhaustively annotated
    # image 2: a cat-3 box. Frequencies do not matter for oLRP.
    gt = {
        "images": [
            {"id": 1, "height": 100, "width": 100, "neg_category_ids": [3], "not_exhaustive_category_ids": [1]},
            {"id": 2, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": c, "name": f"c{c}", "frequency": "f"} for c in (1, 2, 3)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400},
            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 20, 20], "score": 0.95},  # unmatched, not exhaustive: ignored
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.8},  # TP
        {"image_id": 1, "category_id": 2, "bbox": [60, 10, 20, 20], "score": 0.9},  # cat 2 unknown in image 1: not evaluated
        {"image_id": 1, "category_id": 3, "bbox": [40, 40, 20, 20], "score": 0.9},  # negative category: FP
        {"image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.5},  # TP
    ]
    r = olrp(gt, dets, kind="lvis")
    # cat 1: the TP alone: 0. cat 3: keep FP only: (0 + 1 + 1) / 2 = 1; keep both: (0 + 1 + 0) / 2 = 0.5
    assert r.per_class[1].olrp == 0.0
    assert (r.per_class[3].olrp, r.per_class[3].fp) == (0.5, 0.5)
    assert set(r.per_class) == {1, 3} and r.olrp == 0.25
    # the same files read as COCO: cat 1 now has its FP above the TP: keep both → (0 + 1 + 0) / 2
    coco = olrp(gt, dets, kind="coco")
    assert coco.per_class[1].olrp == 0.5


def test_bad_input_is_an_evaluation_error():
    gt = _coco_gt(GT_ANNS)
    with pytest.raises(EvaluationError, match="negative width"):
        olrp(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 3], "score": 0.5}])
