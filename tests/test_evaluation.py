"""COCO / LVIS AP and oLRP through harness.evaluation.evaluate: perfect detections, hand-computed shifts,
LVIS frequency groups, empty and bad inputs, mmdet prediction conversion."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.data import SyntheticParams, generate_synthetic
from harness.evaluation import (
    EvaluationError,
    encode_mask,
    evaluate,
    gt_to_detections,
    label_to_category_ids,
    metric_keys,
    predictions_to_coco,
)


pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def approx(x):
    """AP equality up to the packages' eps in precision = tp / (tp + fp + eps)."""
    return pytest.approx(x, abs=1e-12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Small generated datasets of both kinds."""
    base = tmp_path_factory.mktemp("eval-data")
    return {
        kind: generate_synthetic(SyntheticParams.default(kind, train_images=12, val_images=10), base / kind)
        for kind in ("coco", "lvis")
    }


@pytest.mark.parametrize("kind", ["coco", "lvis"])
def test_ground_truth_as_detections_is_perfect(tiny, kind):
    ann = tiny[kind].val_ann
    dets = gt_to_detections(ann)
    m = evaluate(str(ann), dets, kind=kind, iou_types=("bbox", "segm"))
    assert list(m) == metric_keys(kind)
    one = approx(1.0)
    for t in ("bbox", "segm"):
        assert m[f"{t}_AP"] == one and m[f"{t}_AP50"] == one and m[f"{t}_AP75"] == one
        assert m[f"{t}_oLRP"] == 0.0 and m[f"{t}_oLRP_loc"] == 0.0 and m[f"{t}_oLRP_FP"] == 0.0 and m[f"{t}_oLRP_FN"] == 0.0
        defined = [v for k, v in m.items() if k.startswith(f"{t}_AP") and not math.isnan(v)]
        assert defined and all(v == one for v in defined)
    if kind == "lvis":
        assert m["bbox_APr"] == one  # the tiny train split makes every category rare


def _gt(boxes, kind="coco", freqs=None):
    """One 100×100 image; boxes: [(category_id, [x, y, w, h])], masks are the same rectangles."""
    cats = sorted({c for c, _ in boxes} | set(freqs or {}))
    img = {"id": 7, "height": 100, "width": 100, "file_name": "a.png"}
    if kind == "lvis":
        img.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    anns = []
    for i, (c, b) in enumerate(boxes):
        anns.append({"id": i + 1, "image_id": 7, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0, "segmentation": _rle(b)})
    categories = [{"id": c, "name": f"c{c}", **({"frequency": (freqs or {}).get(c, "f")} if kind == "lvis" else {})} for c in cats]
    return {"images": [img], "categories": categories, "annotations": anns}


def _rle(box):
    x, y, w, h = box
    m = np.zeros((100, 100), bool)
    m[y : y + h, x : x + w] = True
    return encode_mask(m)


def _det(c, box, score=0.9):
    return {"image_id": 7, "category_id": c, "bbox": box, "score": score, "segmentation": _rle(box)}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_shifted_box_hand_computed(iou_type):
    # 10×10 box shifted by 1 px: IoU = 90 / 110 = 9/11 ≈ 0.818: a TP at the thresholds 0.50 … 0.80
    # (7 of 10) → AP 0.7, AP50 = AP75 = 1; a small object (area 100) → APs 0.7, no medium/large.
    # oLRP: one TP, nothing else: (1 − 9/11) / 0.5 = 4/11; loc 2/11.
    gt = _gt([(1, [10, 10, 10, 10])])
    m = evaluate(gt, [_det(1, [11, 10, 10, 10])], iou_types=(iou_type,))
    t = iou_type
    assert m[f"{t}_AP"] == approx(0.7) and m[f"{t}_AP50"] == approx(1) and m[f"{t}_AP75"] == approx(1)
    assert m[f"{t}_APs"] == approx(0.7) and math.isnan(m[f"{t}_APm"]) and math.isnan(m[f"{t}_APl"])
    assert m[f"{t}_oLRP"] == pytest.approx(4 / 11) and m[f"{t}_oLRP_loc"] == pytest.approx(2 / 11)
    assert m[f"{t}_oLRP_FP"] == 0.0 and m[f"{t}_oLRP_FN"] == 0.0
    # shifted by 3 px: IoU = 70 / 130 ≈ 0.538: a TP at 0.50 only → AP 0.1, AP50 1, AP75 0
    m = evaluate(gt, [_det(1, [13, 10, 10, 10])], iou_types=(iou_type,))
    assert m[f"{t}_AP"] == approx(0.1) and m[f"{t}_AP50"] == approx(1) and m[f"{t}_AP75"] == 0.0
    assert m[f"{t}_oLRP"] == pytest.approx((1 - 7 / 13) / 0.5)


def test_false_positive_above_the_true_positive():
    # COCO: a FP ranked above the only TP halves the precision at every recall: AP = AP50 = 0.5
    # (interpolated precision 1/2 for all 101 recall points). oLRP: keep both → (0 + 1 + 0) / 2 = 0.5
    gt = _gt([(1, [10, 10, 40, 40])])
    dets = [_det(1, [55, 55, 40, 40], 0.9), _det(1, [10, 10, 40, 40], 0.8)]  # both medium (area 1600)
    m = evaluate(gt, dets, iou_types=("bbox",))
    assert m["bbox_AP"] == approx(0.5) and m["bbox_APm"] == approx(0.5) and math.isnan(m["bbox_APs"])
    assert (m["bbox_oLRP"], m["bbox_oLRP_FP"], m["bbox_oLRP_FN"], m["bbox_oLRP_loc"]) == (0.5, 0.5, 0.0, 0.0)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_lvis_frequency_groups_separately(iou_type):
    # one object per category: rare (1) detected exactly → 1; common (2) shifted 1 px → 0.7 (as above);
    # frequent (3) shifted 3 px → 0.1. AP is the mean over categories: (1 + 0.7 + 0.1) / 3 = 0.6.
    gt = _gt([(1, [10, 10, 10, 10]), (2, [40, 40, 10, 10]), (3, [70, 70, 10, 10])], "lvis", {1: "r", 2: "c", 3: "f"})
    dets = [_det(1, [10, 10, 10, 10]), _det(2, [41, 40, 10, 10]), _det(3, [73, 70, 10, 10])]
    # a category neither annotated in the image nor listed negative (4) is not evaluated: no effect
    gt["categories"].append({"id": 4, "name": "c4", "frequency": "c"})
    dets.append(_det(4, [0, 80, 10, 10], 0.99))
    m = evaluate(gt, dets, kind="lvis", iou_types=(iou_type,))
    t = iou_type
    assert m[f"{t}_APr"] == approx(1.0)
    assert m[f"{t}_APc"] == approx(0.7)
    assert m[f"{t}_APf"] == approx(0.1)
    assert m[f"{t}_AP"] == approx(0.6)
    # oLRP over the three categories with ground truth: 0, 4/11, (1 − 7/13) / 0.5
    assert m[f"{t}_oLRP"] == pytest.approx((0 + 4 / 11 + (6 / 13) / 0.5) / 3)
    # listed as negative in the image, category 4's detection becomes a false positive — but category 4
    # has no ground truth anywhere, so AP and oLRP still skip it
    gt["images"][0]["neg_category_ids"] = [4]
    assert evaluate(gt, dets, kind="lvis", iou_types=(iou_type,))[f"{t}_AP"] == approx(0.6)


def test_lvis_not_exhaustive_ignores_unmatched_detections():
    gt = _gt([(1, [10, 10, 20, 20])], "lvis", {1: "f"})
    dets = [_det(1, [60, 60, 20, 20], 0.95), _det(1, [10, 10, 20, 20], 0.5)]
    assert evaluate(gt, dets, kind="lvis", iou_types=("bbox",))["bbox_AP"] == approx(0.5)
    gt["images"][0]["not_exhaustive_category_ids"] = [1]
    m = evaluate(gt, dets, kind="lvis", iou_types=("bbox",))
    assert m["bbox_AP"] == approx(1.0) and m["bbox_oLRP"] == 0.0


@pytest.mark.parametrize("kind", ["coco", "lvis"])
def test_empty_detections_score_zero(tiny, kind):
    m = evaluate(str(tiny[kind].val_ann), [], kind=kind, iou_types=("bbox", "segm"))
    for t in ("bbox", "segm"):
        assert m[f"{t}_AP"] == 0.0 and m[f"{t}_AP50"] == 0.0
        assert m[f"{t}_oLRP"] == 1.0 and m[f"{t}_oLRP_FN"] == 1.0
    assert "float" not in np.__dict__  # the lvis numpy alias does not leak


def test_default_iou_types_follow_the_detections(tiny):
    ann = tiny["coco"].val_ann
    boxes = gt_to_detections(ann, with_masks=False)
    assert set(k.split("_")[0] for k in evaluate(str(ann), boxes)) == {"bbox"}
    assert set(k.split("_")[0] for k in evaluate(str(ann), gt_to_detections(ann))) == {"bbox", "segm"}


def test_lvis_keeps_300_detections_per_image():
    gt = _gt([(1, [10, 10, 20, 20])], "lvis", {1: "f"})
    noise = [_det(1, [60, 60, 5, 5], 0.9) for _ in range(300)]
    # the TP is the 301st by score: cut by the 300-per-image limit → AP 0
    m = evaluate(gt, noise + [_det(1, [10, 10, 20, 20], 0.1)], kind="lvis", iou_types=("bbox",))
    assert m["bbox_AP"] == 0.0 and m["bbox_oLRP"] == 1.0


BAD = [
    ({"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, "image_id 99 is not in the ground truth"),
    ({"image_id": 7, "category_id": 42, "bbox": [0, 0, 1, 1], "score": 0.5}, "category_id 42 is not in the ground truth"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, -2], "score": 0.5}, "negative height"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1], "score": 0.5}, "bbox must be 4 finite numbers"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}, "score must be a finite number"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}, "score must be a finite number"),
    # an integer beyond a float's range (JSON allows it) is not a finite number, rather than an OverflowError
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 10 ** 400, 1], "score": 0.5}, "bbox must be 4 finite numbers"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": -(10 ** 400)}, "score must be a finite number"),
    ({"image_id": 7, "category_id": 1, "bbox": [0, 0, True, 1], "score": 0.5}, "bbox must be 4 finite numbers"),
    ({"image_id": 7, "category_id": 1, "score": 0.5}, "neither bbox nor segmentation"),
]


@pytest.mark.parametrize("det,message", BAD)
def test_bad_detections(det, message):
    with pytest.raises(EvaluationError, match=message):
        evaluate(_gt([(1, [10, 10, 10, 10])]), [det], iou_types=("bbox",))


def test_bad_masks_and_files(tmp_path):
    gt = _gt([(1, [10, 10, 10, 10])])
    det = {"image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}
    with pytest.raises(EvaluationError, match="has no segmentation"):
        evaluate(gt, [det], iou_types=("segm",))
    with pytest.raises(EvaluationError, match="malformed segmentation"):
        evaluate(gt, [dict(det, segmentation={"size": [100, 100], "counts": "\x7f\x7f"})], iou_types=("segm",))
    with pytest.raises(EvaluationError, match="differs from the image size"):
        evaluate(gt, [dict(det, segmentation={"size": [50, 100], "counts": "0"})], iou_types=("segm",))
    with pytest.raises(EvaluationError, match="does not exist"):
        evaluate(str(tmp_path / "none.json"), [])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EvaluationError, match="not valid JSON"):
        evaluate(str(bad), [])
    with pytest.raises(EvaluationError, match="JSON list"):
        evaluate(gt, {"image_id": 7})
    with pytest.raises(EvaluationError, match="no 'annotations' list"):
        evaluate({"images": [], "categories": []}, [])
    with pytest.raises(EvaluationError, match="neg_category_ids"):
        evaluate(gt, [], kind="lvis")
    with pytest.raises(EvaluationError, match="unknown kind"):
        evaluate(gt, [], kind="voc")
    with pytest.raises(EvaluationError, match="unknown IoU type"):
        evaluate(gt, [], iou_types=("keypoints",))
    # polygons are accepted for masks on both sides
    poly = {"image_id": 7, "category_id": 1, "bbox": [10, 10, 10, 10], "score": 1.0, "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]}
    assert evaluate(gt, [poly], iou_types=("segm",))["segm_AP50"] == approx(1.0)


def test_detections_file_and_inputs_untouched(tiny, tmp_path):
    ann = tiny["coco"].val_ann
    dets = gt_to_detections(ann)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    before = json.dumps(dets)
    assert evaluate(str(ann), str(path))["segm_AP"] == approx(1.0)
    assert evaluate(str(ann), dets)["bbox_AP"] == approx(1.0) and json.dumps(dets) == before


def test_mmdet_predictions_to_coco(tiny):
    torch = pytest.importorskip("torch")
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    ann = tiny["coco"].val_ann
    gt = json.loads(ann.read_text())
    cat_ids = label_to_category_ids(ann, "coco", tiny["coco"].classes)
    assert cat_ids == list(range(1, 9)) == tiny["coco"].label_to_category_id()
    img = gt["images"][0]
    mask = torch.zeros(2, img["height"], img["width"], dtype=torch.bool)
    mask[0, 10:20, 30:50] = True
    mask[1, 0:5, 0:5] = True
    sample = DetDataSample(metainfo={"img_id": img["id"]})
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[30.0, 10.0, 50.0, 20.0], [0.0, 0.0, 5.0, 5.0]]),
        scores=torch.tensor([0.9, 0.3]),
        labels=torch.tensor([2, 0]),
        masks=mask,
    )
    out = predictions_to_coco([sample], cat_ids)
    assert out[0]["bbox"] == [30.0, 10.0, 20.0, 10.0] and out[0]["category_id"] == 3
    assert out[1]["category_id"] == 1 and out[0]["score"] == pytest.approx(0.9)
    from pycocotools import mask as mask_utils

    decoded = mask_utils.decode({"size": out[0]["segmentation"]["size"], "counts": out[0]["segmentation"]["counts"].encode()})
    assert decoded.sum() == 200 and decoded[10:20, 30:50].all()
    # the dict form an mmengine metric receives gives the same, and evaluates
    as_dict = [{"img_id": img["id"], "pred_instances": dict(sample.pred_instances.to_dict())}]
    assert predictions_to_coco(as_dict, cat_ids) == out
    assert predictions_to_coco([sample], cat_ids, with_masks=False)[0].keys() == {"image_id", "category_id", "bbox", "score"}
    # a mask-only detector (SOLOv2 fills bboxes with zeros): boxes come from the masks
    sample.pred_instances.bboxes = torch.zeros(2, 4)
    assert [d["bbox"] for d in predictions_to_coco([sample], cat_ids)] == [[30.0, 10.0, 20.0, 10.0], [0.0, 0.0, 5.0, 5.0]]
    m = evaluate(str(ann), out, iou_types=("bbox", "segm"))
    assert 0.0 <= m["bbox_AP"] <= 1.0 and 0.0 <= m["segm_oLRP"] <= 1.0


@pytest.mark.parametrize("kind", ["coco", "lvis"])
def test_agrees_with_mmdet_metrics(tiny, kind):
    """Random predictions (jittered ground truth, wrong labels, clutter), as mmdet data samples: our AP
    equals mmdet's own CocoMetric / LVISMetric (which round to 3 decimals)."""
    torch = pytest.importorskip("torch")
    from mmdet.evaluation.metrics import CocoMetric, LVISMetric

    from harness.evaluation import numpy_float_alias, predictions_to_results

    paths = tiny[kind]
    gt = json.loads(paths.val_ann.read_text())
    cat_ids = label_to_category_ids(gt, kind, paths.classes)
    label_of = {c: i for i, c in enumerate(cat_ids)}
    rng = np.random.default_rng(0)
    samples = []
    for img in gt["images"]:
        boxes, labels, scores = [], [], []
        for a in (a for a in gt["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = a["bbox"]
            for _ in range(2):
                j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
                labels.append(label_of[a["category_id"]] if rng.uniform() < 0.8 else int(rng.integers(len(cat_ids))))
                scores.append(rng.uniform())
        for _ in range(3):
            x, y = rng.uniform(0, 100, 2)
            boxes.append([x, y, x + rng.uniform(5, 28), y + rng.uniform(5, 28)])
            labels.append(int(rng.integers(len(cat_ids))))
            scores.append(rng.uniform(0, 0.5))
        b = np.clip(np.array(boxes), 0, 128)
        masks = np.zeros((len(b), img["height"], img["width"]), bool)
        for i, (x1, y1, x2, y2) in enumerate(np.rint(b).astype(int)):
            masks[i, y1:y2, x1:x2] = True
        samples.append(
            {
                "img_id": img["id"],
                "ori_shape": (img["height"], img["width"]),
                "pred_instances": {
                    "bboxes": torch.tensor(b, dtype=torch.float32),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.tensor(labels),
                    "masks": torch.from_numpy(masks),
                },
            }
        )
    ours = evaluate(str(paths.val_ann), predictions_to_results(samples, paths.val_ann, kind, paths.classes), kind=kind)
    metric = (CocoMetric if kind == "coco" else LVISMetric)(ann_file=str(paths.val_ann), metric=["bbox", "segm"])
    metric.dataset_meta = {"classes": paths.classes}
    metric.process({}, samples)
    with numpy_float_alias():
        theirs = metric.compute_metrics(metric.results)
    names = {"AP": "mAP", "AP50": "mAP_50", "AP75": "mAP_75", "APs": "mAP_s", "APm": "mAP_m", "APl": "mAP_l"}
    if kind == "lvis":
        names = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APr": "APr", "APc": "APc"}
    compared = 0
    for t in ("bbox", "segm"):
        for ours_key, their_key in names.items():
            if kind == "lvis" and t == "segm" and ours_key in ("APs", "APm"):
                continue  # mmdet's LVIS segm results keep the box, so its size ranges use box areas
            want = theirs[f"{t}_{their_key}"]
            if want == -1:
                assert math.isnan(ours[f"{t}_{ours_key}"])
            else:
                assert ours[f"{t}_{ours_key}"] == pytest.approx(want, abs=6e-4), (t, ours_key)
                compared += 0 < want < 1
    assert compared >= 8  # informative values, not all 0 or 1


@pytest.mark.parametrize("kind", ["coco", "lvis"])
def test_ap_and_olrp_read_the_same_ignore_rule(kind):
    # Two ground truths; the second carries ``ignore: 1`` but is no crowd. pycocotools overwrites ``ignore``
    # with ``iscrowd``, so on COCO it is a regular ground truth (missed: recall 1/2, precision 1 at 51 of the
    # 101 recall points, so AP 51/101; one FN);
    # lvis-api keeps ``ignore``, so on LVIS it counts nowhere (AP 1, no FN). oLRP must agree with AP.
    gt = _gt([(1, [10, 10, 40, 40]), (1, [55, 55, 40, 40])], kind=kind)
    gt["annotations"][1]["ignore"] = 1
    m = evaluate(gt, [_det(1, [10, 10, 40, 40])], iou_types=("bbox",), kind=kind)
    if kind == "coco":
        assert m["bbox_AP"] == approx(51 / 101) and m["bbox_oLRP_FN"] == 0.5 and m["bbox_oLRP"] == pytest.approx(0.5)
    else:
        assert m["bbox_AP"] == approx(1.0) and m["bbox_oLRP_FN"] == 0.0 and m["bbox_oLRP"] == 0.0
    # a crowd on COCO: ignored by both (a detection on it is neither TP nor FP)
    if kind == "coco":
        gt["annotations"][1].update(ignore=0, iscrowd=1)
        m = evaluate(gt, [_det(1, [10, 10, 40, 40]), _det(1, [55, 55, 40, 40], 0.95)], iou_types=("bbox",))
        assert m["bbox_AP"] == approx(1.0) and m["bbox_oLRP"] == 0.0 and m["bbox_oLRP_FP"] == 0.0


def test_a_compressed_rle_string_is_checked_alike_byte_by_byte_and_with_numpy():
    """Short strings (every tiny-profile detection's mask) are checked byte by byte, long ones with numpy:
    the same answer for thousands of real masks' strings (pycocotools' encoding, which must pass, with
    pycocotools' own area) and for every corruption of them, and for the edge cases of the format."""
    from pycocotools import mask as mask_utils

    from harness.evaluation.inputs import _rle_string_ok, _rle_string_ok_bytes, _rle_string_ok_numpy

    rng = np.random.default_rng(0)
    cases = []
    for i in range(1500):
        h, w = [(128, 128), (480, 640), (7, 5), (1, 1)][i % 4]
        m = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y:y + rng.integers(1, h + 1), x:x + rng.integers(1, w + 1)] = 1
        counts = mask_utils.encode(np.asfortranarray(m))["counts"]
        assert _rle_string_ok_bytes(counts, h, w) and _rle_string_ok_numpy(counts, h, w)
        assert mask_utils.area({"size": [h, w], "counts": counts}) == m.sum()
        cases.append((counts, h, w))
        bad = bytearray(counts)
        for _ in range(rng.integers(1, 3)):
            at = rng.integers(0, len(bad) + 1)
            if rng.random() < 0.5 and bad:
                bad[min(at, len(bad) - 1)] = rng.integers(40, 120)
            else:
                bad.insert(at, rng.integers(40, 120))
        cases.append((bytes(bad), h, w))
        cases.append((counts, h, w + 1))  # covers another size
    cases += [(b"", 0, 0), (b"", 1, 1), (b"0", 0, 0), (b"1", 1, 1), (b"P", 1, 1), (b"o", 1, 1), (b"/", 1, 1),
              (b"P" * 11 + b"0", 0, 0), (b"P" * 12 + b"0", 0, 0), (b"1" + b"`", 1, 1), (b"1" * 3 + b"X", 3, 1)]
    answers = [(_rle_string_ok_bytes(*c), _rle_string_ok_numpy(*c)) for c in cases]
    assert all(a == b for a, b in answers)
    assert 1000 < sum(a for a, _ in answers) < len(answers) - 1000  # both kinds well represented
    long = max(cases[0:4500:3], key=lambda c: len(c[0]))  # the longest of the real masks' strings
    assert len(long[0]) > 256 and _rle_string_ok(*long)  # the dispatcher reaches the numpy path too
    assert not _rle_string_ok(long[0], long[1], long[2] + 1)
    # all at once (the detections and annotations of a file): the same answers, in any order and mix
    from harness.evaluation.inputs import compressed_rle_verdicts, rle_strings_ok

    cases += [(long[0], 1 << 16, 1 << 16), (b"", 1 << 16, 1 << 16), (b"", 0, 1 << 40)]  # areas checked alone
    for order in (np.arange(len(cases)), rng.permutation(len(cases))):
        batch = [cases[i] for i in order]
        got = rle_strings_ok([c[0] for c in batch], [(c[1], c[2]) for c in batch])
        assert got.tolist() == [_rle_string_ok_bytes(*c) for c in batch]
    assert rle_strings_ok([], []).tolist() == []
    segms = [{"size": [c[1], c[2]], "counts": c[0].decode("latin-1") if i % 2 else c[0]} for i, c in enumerate(cases[:60])]
    segms += [None, [[0, 0, 1, 0, 1, 1]], {"size": [1, 1], "counts": [1]}, {"size": [-1, 1], "counts": "1"},
              {"size": [1, 1], "counts": "\u00e91"}]
    verdicts = compressed_rle_verdicts(segms)
    assert verdicts[:60] == [_rle_string_ok_bytes(*c) if c[0].isascii() or i % 2 == 0 else None
                             for i, c in enumerate(cases[:60])]
    assert verdicts[60:] == [None] * 5


def _noisy_detections(gt: dict, seed: int, with_masks: bool) -> list[dict]:
    """Detections around each ground-truth object (near, shifted, duplicated, some on crowd regions) and
    many low-scored boxes anywhere: most match nothing, as a detector's tail does."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        for _ in range(int(rng.integers(1, 4))):
            x, y, w, h = a["bbox"]
            jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"] if rng.random() < 0.8 else int(rng.choice(cats)),
                         "bbox": [max(0.0, x + jitter[0]), max(0.0, y + jitter[1]), max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                         "score": float(rng.random())})
        x, y, w, h = a["bbox"]  # its upper half: IoU exactly 0.5, the first threshold (matches, as in pycocotools)
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, w, h / 2],
                     "score": float(rng.random())})
    for im in gt["images"]:
        for _ in range(40):
            hgt, wid = sizes[im["id"]]
            x, y = rng.random() * wid * 0.9, rng.random() * hgt * 0.9
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)), "score": float(rng.random() * 0.3),
                         "bbox": [x, y, float(rng.uniform(1, wid - x)), float(rng.uniform(1, hgt - y))]})
    if with_masks:
        for d in dets:
            hgt, wid = sizes[d["image_id"]]
            x, y, w, h = d["bbox"]
            m = np.zeros((hgt, wid), dtype=np.uint8, order="F")
            m[int(y):int(y + h) + 1, int(x):int(x + w) + 1] = 1
            rle = mask_utils.encode(m)
            rle["counts"] = rle["counts"].decode()
            d["segmentation"] = rle
    return dets


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", [0, 1])
def test_skipping_unmatchable_detections_changes_no_match(tiny, iou_type, seed):
    """harness.evaluation.ap's COCOeval (its evaluateImg skips the detections below every IoU threshold's
    reach) gives pycocotools' own per-image results, field by field, and the same summary, with crowd
    regions, every area range and a long tail of unmatched detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from harness.evaluation.ap import _gt_for_segm, skip_unmatchable_cocoeval

    gt = json.loads(Path(tiny["coco"].ann_files["val"]).read_text())
    if iou_type == "segm":
        gt = _gt_for_segm(gt)
    gt["annotations"][0]["iscrowd"] = 1  # a crowd region: matched by many, never missed
    dets = _noisy_detections(gt, seed, with_masks=iou_type == "segm")
    results = []
    for cls in (COCOeval, skip_unmatchable_cocoeval()):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
            ev = cls(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        results.append(ev)
    plain, skipping = results
    assert type(skipping).evaluateImg is not COCOeval.evaluateImg
    assert len(plain.evalImgs) == len(skipping.evalImgs)
    matched = 0
    for a, b in zip(plain.evalImgs, skipping.evalImgs):
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
        matched += int((np.asarray(a["dtMatches"]) > 0).sum())
    assert matched > 0 and plain.stats[0] > 0
    assert np.array_equal(plain.stats, skipping.stats)
    assert np.array_equal(plain.eval["precision"], skipping.eval["precision"])
