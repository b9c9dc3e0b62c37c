"""The evaluation metric a run adds to its config keeps every detection of every image."""

from __future__ import annotations

import json

import numpy as np

import harness.run.hooks  # noqa: F401  (registers the metric)
from harness.run.hooks import HarnessMetric


def test_metric_keeps_all_detections_and_scores_perfect_predictions(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2, 3)]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    anns, samples = [], []
    k = 0
    for img in images:
        boxes = []
        for j in range(5):
            k += 1
            x, y = 2 + 10 * j, 3 + 5 * j
            anns.append({"id": k, "image_id": img["id"], "category_id": 1 + j % 2, "bbox": [x, y, 8, 9],
                         "area": 72, "iscrowd": 0})
            boxes.append([x, y, x + 8, y + 9])
        samples.append({"img_id": img["id"], "pred_instances": {"bboxes": np.array(boxes, dtype=np.float32),
                        "scores": np.ones(5, dtype=np.float32), "labels": np.array([j % 2 for j in range(5)])}})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    metric = HarnessMetric(ann_file=str(gt), kind="coco", outfile=str(tmp_path / "dets.json"))
    metric.process({}, samples)
    metrics = metric.evaluate(size=len(images))
    assert len(json.loads((tmp_path / "dets.json").read_text())) == 15
    assert metrics["bbox_AP"] == 1.0 and metrics["bbox_oLRP"] == 0.0
