"""From mmdet predictions (or ground truth) to COCO results-format detections, and back to files.

mmdet 3.x predictions are ``DetDataSample`` objects (or their ``to_dict()`` form, which is what an
mmengine metric receives) with ``img_id`` and ``pred_instances``: ``bboxes`` (N × 4, x1 y1 x2 y2),
``scores`` (N), ``labels`` (N, indices into the dataset's classes) and optionally ``masks`` (N × H × W
booleans, or already RLE-encoded). Labels become category ids through the list mmdet itself uses
(:func:`label_to_category_ids`). A detection whose box is empty but which has a mask (SOLOv2 predicts
masks only and fills ``bboxes`` with zeros) gets the tight box of its mask.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _np(x):
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "masks") and not isinstance(x, (list, tuple)):  # mmdet BitmapMasks
        x = x.masks
    return np.asarray(x) if not isinstance(x, list) else x


def label_to_category_ids(gt, kind: str = "coco", classes=None) -> list[int]:
    """The category id of each label, as mmdet assigns labels: ``CocoDataset`` takes the annotation file's
    categories whose names are in ``classes`` (all when ``None``) in file order; ``LVISV1Dataset`` takes
    every category in file order. ``gt``: a path or a loaded annotation dict."""
    if isinstance(gt, (str, Path)):
        gt = json.loads(Path(gt).read_text())
    cats = gt["categories"]
    if kind == "coco" and classes:
        names = set(classes)
        return [c["id"] for c in cats if c["name"] in names]
    return [c["id"] for c in cats]


def encode_mask(mask) -> dict:
    """One boolean H × W mask as compressed RLE with ``counts`` as a str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _sample_fields(sample):
    if isinstance(sample, dict):
        img_id = sample.get("img_id")
        pred = sample.get("pred_instances")
    else:
        img_id = getattr(sample, "img_id", None) if hasattr(sample, "img_id") else sample.metainfo.get("img_id")
        pred = sample.pred_instances
    if img_id is None or pred is None:
        raise ValueError("a prediction needs img_id and pred_instances")
    get = pred.get if isinstance(pred, dict) else (lambda k, d=None: getattr(pred, k, d) if k in pred else d)
    return int(img_id), get


def instances_to_coco(img_id: int, bboxes, scores, labels, cat_ids, masks=None) -> list[dict]:
    """Arrays of one image → results entries (``bbox`` as [x, y, w, h]; ``segmentation`` RLE if masks)."""
    bboxes = np.asarray(_np(bboxes), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(_np(scores), dtype=np.float64).reshape(-1)
    labels = np.asarray(_np(labels)).reshape(-1).astype(int)
    masks = _np(masks)
    out = []
    for i in range(len(scores)):
        x1, y1, x2, y2 = (float(v) for v in bboxes[i])
        label = int(labels[i])
        if not 0 <= label < len(cat_ids):
            raise ValueError(f"label {label} has no category id (have {len(cat_ids)} classes)")
        d = {"image_id": img_id, "category_id": int(cat_ids[label]), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i])}
        if masks is not None and len(masks):
            m = masks[i]
            if isinstance(m, dict):
                counts = m["counts"]
                d["segmentation"] = {"size": [int(v) for v in m["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
            else:
                d["segmentation"] = encode_mask(m)
            if x2 <= x1 and y2 <= y1:  # no box predicted (SOLOv2 gives zeros): the mask's tight box
                from pycocotools import mask as mask_utils

                seg = d["segmentation"]
                d["bbox"] = [float(v) for v in mask_utils.toBbox({"size": seg["size"], "counts": seg["counts"].encode("ascii")})]
        out.append(d)
    return out


def predictions_to_coco(samples, cat_ids, with_masks: bool | None = None) -> list[dict]:
    """mmdet predictions (``DetDataSample`` or dicts) → COCO results entries. ``with_masks``: ``None``
    takes masks when present, ``False`` ignores them, ``True`` requires them."""
    out = []
    for sample in samples:
        img_id, get = _sample_fields(sample)
        masks = get("masks") if with_masks is not False else None
        if with_masks and masks is None:
            raise ValueError(f"prediction for image {img_id} has no masks")
        out.extend(instances_to_coco(img_id, get("bboxes"), get("scores"), get("labels"), cat_ids, masks))
    return out


def predictions_to_results(samples, gt, kind: str = "coco", classes=None, with_masks: bool | None = None) -> list[dict]:
    """:func:`predictions_to_coco` with the label → category id map read from the ground truth ``gt``
    (annotation path or dict) the way mmdet's dataset of ``kind`` assigns labels."""
    return predictions_to_coco(samples, label_to_category_ids(gt, kind, classes), with_masks)


def gt_to_detections(gt, score: float = 1.0, with_masks: bool = True) -> list[dict]:
    """Ground-truth annotations as detections (score ``score``): the perfect detector, for checks.
    Crowd annotations are skipped; masks become RLE when ``with_masks`` and present."""
    from harness.evaluation.inputs import load_ground_truth

    checked = load_ground_truth(gt, "coco", ("bbox",))
    out = []
    for a in checked.data["annotations"]:
        if a.get("iscrowd"):
            continue
        d = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": float(score)}
        if with_masks and a.get("segmentation") is not None:
            from harness.evaluation.inputs import segmentation_to_rle

            img = checked.images[a["image_id"]]
            d["segmentation"] = segmentation_to_rle(a["segmentation"], img.get("height"), img.get("width"), "ground truth")
        out.append(d)
    return out

