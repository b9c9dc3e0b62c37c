"""A small COCO-format dataset the tests write themselves: your own data as the harness must take it.

Three classes with non-contiguous ids (7, 12, 40) and names with spaces and non-ASCII letters, listed in
an order that is not their ids' (40 first); PNG images of 96 × 72 pixels (not square) showing filled
shapes of each class's colour on a noisy background; polygon masks (``masks=False``: boxes only); one crowd
region per split (uncompressed RLE, as COCO writes them) that training and evaluation ignore. Train and
val images share one folder. :func:`write_dataset` returns the paths; :func:`spec` a spec that uses them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 96, 72
CATEGORIES = [  # file order (the label order): not sorted by id
    {"id": 40, "name": "washer Ø8", "supercategory": "part"},
    {"id": 7, "name": "Schraube (M4)", "supercategory": "part"},
    {"id": 12, "name": "hex nut", "supercategory": "part"},
]
COLOURS = {40: (230, 60, 40), 7: (40, 200, 70), 12: (50, 90, 230)}


def _polygon(cat_id: int, cx: float, cy: float, r: float) -> list[float]:
    """A class's shape as one polygon: 40 a square, 7 a triangle, 12 a hexagon."""
    sides, turn = {40: (4, np.pi / 4), 7: (3, -np.pi / 2), 12: (6, 0.0)}[cat_id]
    angles = turn + 2 * np.pi * np.arange(sides) / sides
    return [round(float(v), 2) for a in angles for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def _fill(img: np.ndarray, poly: list[float], colour) -> None:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(img)
    ImageDraw.Draw(canvas).polygon(list(zip(poly[::2], poly[1::2])), fill=tuple(colour))
    img[...] = np.asarray(canvas)


def _split(rng, folder: Path, split: str, n: int, first_id: int, masks: bool):
    images, anns = [], []
    for k in range(n):
        image_id = first_id + k
        name = f"{split}_{image_id:04d}.png"
        img = rng.integers(90, 140, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        for j in range(int(rng.integers(1, 4))):
            cat = CATEGORIES[(k + j) % 3]["id"]
            r = float(rng.uniform(9, 18))
            cx, cy = float(rng.uniform(r + 1, WIDTH - r - 1)), float(rng.uniform(r + 1, HEIGHT - r - 1))
            poly = _polygon(cat, cx, cy, r)
            _fill(img, poly, COLOURS[cat])
            xs, ys = poly[::2], poly[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            ann = {"id": 1000 * image_id + j, "image_id": image_id, "category_id": cat, "bbox": [round(v, 2) for v in box],
                   "area": round(box[2] * box[3] * (0.5 if cat == 7 else 0.8), 2), "iscrowd": 0}
            if masks:
                ann["segmentation"] = [poly]
            anns.append(ann)
        from PIL import Image

        Image.fromarray(img).save(folder / name)
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
    # one crowd region: a block of the first image, uncompressed RLE (column-major runs)
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[2:14, 60:90] = 1
    flat = mask.flatten(order="F")
    runs, current, count = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(count)
            current, count = v, 0
        count += 1
    runs.append(count)
    crowd = {"id": 1000 * first_id + 99, "image_id": first_id, "category_id": 12, "bbox": [60, 2, 30, 12],
             "area": 360, "iscrowd": 1}
    if masks:
        crowd["segmentation"] = {"size": [HEIGHT, WIDTH], "counts": runs}
    anns.append(crowd)
    return images, anns


def write_dataset(folder: Path, *, masks: bool = True, train_images: int = 16, val_images: int = 8,
                  seed: int = 0) -> dict:
    """Write ``folder/images/*.png``, ``folder/train.json``, ``folder/val.json``; returns their paths."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, first in (("train", train_images, 1), ("val", val_images, 501)):
        images, anns = _split(rng, folder / "images", split, n, first, masks)
        path = folder / f"{split}.json"
        path.write_text(json.dumps({"info": {"description": "harness test parts"}, "licenses": [], "images": images,
                                    "annotations": anns, "categories": CATEGORIES}))
        out[split] = path
    out["images"] = folder / "images"
    return out


def spec(name: str, data: dict, detectors, losses=("rs",), **schedule) -> dict:
    """A tiny-profile spec on ``data`` (paths as given: absolute, or relative to where the spec is written)."""
    return {"name": name, "profile": "tiny", "detectors": detectors if detectors == "all" else list(detectors),
            "losses": list(losses),
            "dataset": {"kind": "coco_format", "name": "test-parts",
                        "train": {"ann": str(data["train"]), "images": str(data["images"])},
                        "val": {"ann": str(data["val"]), "images": str(data["images"])}},
            "schedule": {"epochs": 1, "max_iters_per_epoch": 2, "batch_per_gpu": 2, **schedule},
            "launch": {"executor": "local", "cpus_per_run": 1, "time_min": 20}}
