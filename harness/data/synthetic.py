"""The embedded benchmark: a generated instance-segmentation dataset in COCO or LVIS v1 format.

Images show several objects of distinct categories (a category is a shape and a colour) on a textured,
cluttered background. Objects vary in scale (log-uniform between ``min_size`` and ``max_size`` pixels),
aspect ratio, rotation and surface texture (solid, stripes, checker, gradient, speckle), may be cut by the
image border and partly hidden by objects drawn later (at most ``max_occlusion`` of an object is hidden).
Grey/brown distractors (lines, blobs, outlines) that belong to no category sit behind the objects.
Every annotation describes what is visible: its mask (compressed RLE, exact), the tight box of that mask
and its pixel area.

Two kinds:

- ``coco``: 8 categories, one shape and one colour each (``red_circle``, ``green_square``, ...), drawn
  uniformly; ``instances_{train,val}.json`` in COCO format.
- ``lvis``: 32 categories (8 shapes × 4 colours) with a long-tailed distribution, written as LVIS v1
  (``lvis_v1_{train,val}.json``): categories carry ``frequency`` assigned by the LVIS rule from the
  number of *training images* containing the category (``r``: 1–10, ``c``: 11–100, ``f``: > 100),
  ``image_count`` and ``instance_count``; images carry ``neg_category_ids`` (a sample of categories
  verified absent) and ``not_exhaustive_category_ids`` (categories with instances left unannotated: about
  10 % of images lose one annotation of a category that appears twice or more there, and every image
  with a dropped instance lists it). The train split is large enough (1 200 images) that the LVIS rule
  itself yields all three groups; the val split draws categories from a flatter distribution (weights
  to the power 0.5) and every category appears in both splits at least once, so APr, APc and APf are
  all defined. Image files are named through ``coco_url`` as in LVIS v1
  (``http://images.cocodataset.org/train/000000000001.png``), which mmdet's ``LVISV1Dataset`` resolves
  to ``<root>/train/000000000001.png``.

Layout of a generated dataset (``root``)::

    params.json                      the parameters (and generator version) it was made from
    annotations/instances_train.json annotations/instances_val.json      (coco)
    annotations/lvis_v1_train.json   annotations/lvis_v1_val.json        (lvis)
    train/000000000001.png ...       val/000000001201.png ...            (image ids are unique across splits)

Determinism: every image is drawn from its own random stream ``default_rng([seed, kind, split, index])``;
the same parameters give the same bytes (PNG written with fixed settings, JSON with fixed key order).
:func:`ensure_synthetic` caches datasets under ``$HARNESS_DATA_DIR`` (default ``<repo>/data``) in a folder
named by a hash of the parameters, and writes them to a temporary folder that is renamed into place once
complete, so an interrupted run never leaves half a dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.paths import LVIS_OVERSAMPLE_THR, LVIS_V1_TRAIN_IMAGES, DatasetPaths
from harness.files import make_temporary_folder

#: Bump when the generator's output changes for the same parameters (invalidates caches).
GENERATOR_VERSION = 2

KINDS = ("coco", "lvis")

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "crescent", "arrow")
#: Base RGB colours. The COCO kind pairs shape i with colour i; the LVIS kind uses the first four with
#: every shape.
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 190, 60),
    "blue": (45, 80, 220),
    "yellow": (235, 215, 40),
    "magenta": (215, 50, 200),
    "cyan": (40, 210, 215),
    "orange": (245, 135, 25),
    "white": (240, 240, 240),
}
LVIS_COLOURS = ("red", "green", "blue", "yellow")

#: LVIS frequency groups by number of training images containing the category (LVIS v1 definition).
LVIS_RARE_MAX_IMAGES = 10
LVIS_COMMON_MAX_IMAGES = 100

_SPLIT_CODE = {"train": 0, "val": 1}
_KIND_CODE = {"coco": 0, "lvis": 1}
_TEXTURES = ("solid", "stripes", "checker", "gradient", "speckle")


def _env_data_dir() -> Path:
    env = os.environ.get("HARNESS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that determines a synthetic dataset (its hash names the cache folder).

    Sizes are in pixels; ``image_size`` is the side of the square images. ``min_objects``/``max_objects``
    bound the objects drawn per image (an object that cannot be placed without hiding more than
    ``max_occlusion`` of another is retried smaller, then dropped). ``clutter`` is the largest number of
    distractors per image, ``noise`` the standard deviation of the pixel noise (0–255 scale).
    """

    kind: str = "coco"
    seed: int = 0
    image_size: int = 128
    train_images: int = 400
    val_images: int = 100
    min_objects: int = 1
    max_objects: int = 5
    min_size: int = 14
    max_size: int = 64
    max_occlusion: float = 0.5
    clutter: int = 6
    noise: float = 6.0

    @classmethod
    def default(cls, kind: str = "coco", **overrides) -> "SyntheticParams":
        """The default parameters of a kind (LVIS: 1 200 train / 200 val images), with overrides."""
        if kind not in KINDS:
            raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")
        base = {"kind": kind}
        if kind == "lvis":
            base.update(train_images=1200, val_images=200)
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown synthetic kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not 32 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be in [32, 2048], got {self.image_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more (a non-negative integer), got {self.seed}")
        if self.train_images < 1 or self.val_images < 1:
            raise ValueError("train_images and val_images must be at least 1")
        if not 1 <= self.min_objects <= self.max_objects <= 50:
            raise ValueError("need 1 <= min_objects <= max_objects <= 50")
        if not 6 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError(f"need 6 <= min_size <= max_size <= image_size, got {self.min_size}, {self.max_size}")
        if not 0.0 <= self.max_occlusion < 1.0:
            raise ValueError("max_occlusion must be in [0, 1)")
        if self.clutter < 0 or self.noise < 0:
            raise ValueError("clutter and noise must be non-negative")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """Hash of the parameters and generator version (12 hex digits)."""
        blob = json.dumps({"params": self.to_dict(), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------- categories


def categories(kind: str) -> list[dict]:
    """The category list of a kind (ids 1..K in label order; LVIS: alphabetical like LVIS v1)."""
    if kind == "coco":
        names = [(f"{c}_{s}", s, c) for s, c in zip(SHAPES, COLOURS)]
        return [{"id": i + 1, "name": n, "supercategory": s, "shape": s, "colour": c} for i, (n, s, c) in enumerate(names)]
    if kind == "lvis":
        names = sorted((f"{c}_{s}", s, c) for s in SHAPES for c in LVIS_COLOURS)
        return [{"id": i + 1, "name": n, "shape": s, "colour": c} for i, (n, s, c) in enumerate(names)]
    raise ValueError(f"unknown synthetic kind {kind!r}")


def class_names(kind: str) -> tuple[str, ...]:
    """Class names in label order (what mmdet's ``metainfo['classes']`` gets)."""
    return tuple(c["name"] for c in categories(kind))


def _lvis_weights() -> np.ndarray:
    """Designed long tail over the 32 LVIS-kind categories: 6 head categories with most instances,
    14 with a geometric middle, 12 rare ones. Which category lands in which tier is a fixed shuffle
    (independent of the seed), so names keep their role across seeds."""
    n = len(SHAPES) * len(LVIS_COLOURS)
    head = np.full(6, 0.10)  # ≈ 360 instances each in 1200 images × 3 objects: well above 100 images
    middle = 0.045 * (0.012 / 0.045) ** (np.arange(14) / 13)  # ≈ 160 → 43 instances: 11-100 images mostly
    tail = np.full(n - 20, 0.0018)  # ≈ 6 instances: 1–10 images
    w = np.concatenate([head, middle, tail])
    order = np.random.default_rng(20210611).permutation(n)
    out = np.empty(n)
    out[order] = w
    return out / out.sum()


# --------------------------------------------------------------------------------------------- drawing


def _unit_polygons(shape: str) -> list[tuple[np.ndarray, int]]:
    """Outline(s) of a shape in unit coordinates (extent about [-1, 1]²) with their fill (1 or 0: hole)."""

    def circle(r=1.0, cx=0.0, cy=0.0, k=40):
        t = np.linspace(0, 2 * np.pi, k, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)

    if shape == "circle":
        return [(circle(), 1)]
    if shape == "square":
        return [(np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]), 1)]
    if shape == "triangle":
        t = np.deg2rad([90, 210, 330])
        return [(np.stack([np.cos(t), -np.sin(t)], 1) * np.array([1.0, 1.0]) + [0, 0.15], 1)]
    if shape == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]
    if shape == "ring":
        return [(circle(), 1), (circle(0.5), 0)]
    if shape == "cross":
        a, b = 0.32, 1.0
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        return [(np.array(pts, dtype=float), 1)]
    if shape == "crescent":
        return [(circle(), 1), (circle(0.8, 0.45, -0.1), 0)]
    if shape == "arrow":
        pts = [(-1.0, -0.28), (0.15, -0.28), (0.15, -0.75), (1.0, 0.0), (0.15, 0.75), (0.15, 0.28), (-1.0, 0.28)]
        return [(np.array(pts, dtype=float), 1)]
    raise ValueError(shape)


def _rasterise(polys, size: int, cx: float, cy: float, half: float, sx: float, sy: float, theta: float) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    c, s = math.cos(theta), math.sin(theta)
    for pts, fill in polys:
        x = pts[:, 0] * half * sx
        y = pts[:, 1] * half * sy
        xr = cx + c * x - s * y
        yr = cy + s * x + c * y
        draw.polygon([(float(a), float(b)) for a, b in zip(xr, yr)], fill=fill)
    return np.asarray(img, dtype=bool)


@functools.lru_cache(maxsize=4)
def _grid(size: int):
    """Pixel coordinates (y, x) of a square image, float32, shared read-only."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _texture(rng, size: int, box) -> np.ndarray:
    """A brightness modulation field in [-1, 1] over the image (used inside one object's mask)."""
    kind = _TEXTURES[rng.integers(len(_TEXTURES))]
    if kind == "solid":
        return np.zeros((size, size), np.float32)
    yy, xx = _grid(size)
    if kind == "stripes":
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 8.0)
        return np.sign(np.sin(2 * np.pi * (xx * math.cos(phi) + yy * math.sin(phi)) / period)).astype(np.float32)
    if kind == "checker":
        p = rng.uniform(3.0, 7.0)
        return np.sign(np.sin(np.pi * xx / p) * np.sin(np.pi * yy / p)).astype(np.float32)
    if kind == "gradient":
        x0, y0, x1, y1 = box
        phi = rng.uniform(0, 2 * np.pi)
        u = (xx - (x0 + x1) / 2) * math.cos(phi) + (yy - (y0 + y1) / 2) * math.sin(phi)
        return np.clip(u / max(1.0, (x1 - x0 + y1 - y0) / 4), -1, 1).astype(np.float32)
    return rng.uniform(-1, 1, (size, size)).astype(np.float32)  # speckle


def _background(rng, p: SyntheticParams) -> np.ndarray:
    size = p.image_size
    base = rng.uniform(70, 175) + rng.normal(0, 12, 3)
    yy, xx = (g / size for g in _grid(size))
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (xx * math.cos(phi) + yy * math.sin(phi)) * rng.uniform(-40, 40)
    f1, f2 = rng.uniform(1, 4, 2)
    waves = 8 * np.sin(2 * np.pi * (f1 * xx + rng.uniform())) * np.cos(2 * np.pi * (f2 * yy + rng.uniform()))
    img = base[None, None, :] + (ramp + waves)[..., None]
    return img.astype(np.float32)


def _clutter(rng, img: np.ndarray, p: SyntheticParams) -> None:
    from PIL import Image, ImageDraw

    size = p.image_size
    n = int(rng.integers(0, p.clutter + 1))
    for _ in range(n):
        layer = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(layer)
        kind = rng.integers(3)
        x, y = rng.uniform(0, size, 2)
        if kind == 0:  # a line
            x2, y2 = x + rng.uniform(-0.6, 0.6) * size, y + rng.uniform(-0.6, 0.6) * size
            draw.line([(float(x), float(y)), (float(x2), float(y2))], fill=1, width=int(rng.integers(1, 3)))
        elif kind == 1:  # a blob
            r = rng.uniform(2, 6)
            draw.ellipse([float(x - r), float(y - r * rng.uniform(0.6, 1.4)), float(x + r), float(y + r)], fill=1)
        else:  # a rectangle outline
            w, h = rng.uniform(6, 0.3 * size, 2)
            draw.rectangle([float(x), float(y), float(x + w), float(y + h)], outline=1, width=1)
        m = np.asarray(layer, dtype=bool)
        grey = rng.uniform(40, 200)
        tint = np.array([1.0, 0.9, 0.75]) if rng.uniform() < 0.5 else np.ones(3)  # grey or brownish
        img[m] = (grey * tint + rng.normal(0, 6, 3)).astype(np.float32)


def _bbox_of(mask: np.ndarray):
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    return float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)


def _render_image(rng, p: SyntheticParams, cats: list[dict], planned: list[int]):
    """Draw one image with the planned category ids; returns (uint8 HxWx3, [(cat_id, visible mask)])."""
    size = p.image_size
    img = _background(rng, p)
    _clutter(rng, img, p)
    full: list[np.ndarray] = []  # each object's in-frame mask before occlusion
    visible: list[np.ndarray] = []
    placed: list[int] = []
    by_id = {c["id"]: c for c in cats}
    lo, hi = math.log(p.min_size), math.log(p.max_size)
    for cat_id in planned:
        cat = by_id[cat_id]
        polys = _unit_polygons(cat["shape"])
        s = math.exp(rng.uniform(lo, hi))
        for _attempt in range(6):
            aspect = math.exp(rng.uniform(-0.22, 0.22))
            sx, sy = math.sqrt(aspect), 1 / math.sqrt(aspect)
            theta = rng.uniform(0, 2 * np.pi)
            margin = 0.35 * s
            cx, cy = rng.uniform(margin, size - margin, 2) if size > 2 * margin else (size / 2, size / 2)
            m = _rasterise(polys, size, cx, cy, s / 2, sx, sy, theta)
            area = int(m.sum())
            if area < 16:
                s *= 0.85
                continue
            ok = all((v & ~m).sum() >= (1 - p.max_occlusion) * f.sum() for v, f in zip(visible, full))
            if ok:
                break
            s *= 0.85
        else:
            continue
        visible = [v & ~m for v in visible]
        full.append(m)
        visible.append(m.copy())
        placed.append(cat_id)
        ys, xs = np.nonzero(m)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        colour = np.array(COLOURS[cat["colour"]], np.float32) + rng.normal(0, 10, 3).astype(np.float32)
        mod = _texture(rng, size, box)[m]
        strength = rng.uniform(0.12, 0.25)
        img[m] = colour[None, :] * (1 + strength * mod[:, None])
    img += rng.normal(0, p.noise, img.shape).astype(np.float32) if p.noise > 0 else 0
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    objects = [(c, v) for c, v in zip(placed, visible) if v.sum() >= 8]
    return out, objects


# --------------------------------------------------------------------------------------------- planning


def _plan_split(p: SyntheticParams, split: str, n_images: int, cats: list[dict]) -> list[list[int]]:
    """The category ids drawn in each image (before placement). Every category appears at least once."""
    rng = np.random.default_rng([p.seed, _KIND_CODE[p.kind], _SPLIT_CODE[split], 10**6])
    ids = np.array([c["id"] for c in cats])
    if p.kind == "lvis":
        w = _lvis_weights()
        if split == "val":
            w = np.sqrt(w)
            w /= w.sum()
    else:
        w = np.full(len(ids), 1 / len(ids))
    plan = []
    for _ in range(n_images):
        k = int(rng.integers(p.min_objects, p.max_objects + 1))
        plan.append([int(x) for x in rng.choice(ids, size=k, p=w)])
    # make every category appear: replace a slot of the most common category in a random image
    counts = {int(i): 0 for i in ids}
    for objs in plan:
        for c in objs:
            counts[c] += 1
    for c in ids:
        c = int(c)
        if counts[c] == 0:
            donor = max(counts, key=lambda k: counts[k])
            cands = [i for i, objs in enumerate(plan) if donor in objs]
            i = cands[int(rng.integers(len(cands)))]
            plan[i][plan[i].index(donor)] = c
            counts[donor] -= 1
            counts[c] += 1
    return plan


# --------------------------------------------------------------------------------------------- writing


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def _write_png(path: Path, arr: np.ndarray) -> None:
    """Uncompressed PNG: every run decodes every image again (about 64,000 decodes in ``make benchmark``),
    and a stored PNG decodes in a third of the time of a deflated one, for the same pixels (so the
    generator's version, which says what the data is, stays)."""
    from PIL import Image

    Image.fromarray(arr, "RGB").save(path, format="PNG", compress_level=0, optimize=False)


def _generate_split(p: SyntheticParams, split: str, n_images: int, first_image_id: int, cats, out: Path):
    """Render and write one split's images; returns (images, annotations, per-image extra info)."""
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan_split(p, split, n_images, cats)
    images, annotations, streams = [], [], []
    ann_id = 0
    for idx, planned in enumerate(plan):
        rng = np.random.default_rng([p.seed, _KIND_CODE[p.kind], _SPLIT_CODE[split], idx])
        arr, objects = _render_image(rng, p, cats, planned)
        image_id = first_image_id + idx
        name = f"{image_id:012d}.png"
        _write_png(img_dir / name, arr)
        images.append({"id": image_id, "file_name": name, "height": p.image_size, "width": p.image_size})
        anns = []
        for cat_id, mask in objects:
            ann_id += 1
            anns.append(
                {
                    "id": ann_id + (0 if split == "train" else 10**7),
                    "image_id": image_id,
                    "category_id": cat_id,
                    "bbox": list(_bbox_of(mask)),
                    "area": float(mask.sum()),
                    "segmentation": _rle(mask),
                    "iscrowd": 0,
                }
            )
        annotations.append(anns)
        streams.append(rng)  # the image's stream continues for the LVIS bookkeeping
    return images, annotations, streams


def _coco_json(p, cats, images, annotations) -> dict:
    return {
        "info": {"description": f"harness synthetic ({p.kind})", "version": str(GENERATOR_VERSION), "params": p.to_dict()},
        "licenses": [],
        "images": images,
        "annotations": [a for anns in annotations for a in anns],
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]} for c in cats],
    }


def _lvis_postprocess(cats, images, annotations, streams, split):
    """LVIS bookkeeping on one split: drop some instances (not exhaustive), negatives, LVIS image fields."""
    all_ids = [c["id"] for c in cats]
    for img, anns, rng in zip(images, annotations, streams):
        by_cat: dict[int, list] = {}
        for a in anns:
            by_cat.setdefault(a["category_id"], []).append(a)
        not_exhaustive = []
        multi = sorted(c for c, v in by_cat.items() if len(v) >= 2)
        if multi and rng.uniform() < 0.10:
            c = multi[int(rng.integers(len(multi)))]
            drop = by_cat[c][int(rng.integers(len(by_cat[c])))]
            anns.remove(drop)
            not_exhaustive.append(c)
        absent = [c for c in all_ids if c not in by_cat]
        k = min(len(absent), int(rng.integers(2, 9)))
        neg = sorted(int(x) for x in rng.choice(absent, size=k, replace=False)) if k else []
        name = img.pop("file_name")
        img.update(
            {
                "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                "flickr_url": "",
                "license": 0,
                "date_captured": "",
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
    for anns in annotations:
        for a in anns:
            del a["iscrowd"]  # LVIS has no crowd annotations


def _lvis_categories(cats, train_annotations) -> list[dict]:
    images_per_cat: dict[int, set] = {c["id"]: set() for c in cats}
    instances_per_cat = {c["id"]: 0 for c in cats}
    for anns in train_annotations:
        for a in anns:
            images_per_cat[a["category_id"]].add(a["image_id"])
            instances_per_cat[a["category_id"]] += 1
    out = []
    for c in cats:
        n = len(images_per_cat[c["id"]])
        out.append(
            {
                "id": c["id"],
                "name": c["name"],
                "synset": f"{c['name']}.n.01",
                "synonyms": [c["name"]],
                "def": f"a {c['colour']} {c['shape']}",
                "frequency": lvis_frequency(n),
                "image_count": n,
                "instance_count": instances_per_cat[c["id"]],
            }
        )
    return out


def lvis_frequency(image_count: int) -> str:
    """LVIS v1 frequency group from the number of training images containing a category:
    ``r`` 1–10 (0 counts as rare too), ``c`` 11–100, ``f`` more than 100."""
    if image_count <= LVIS_RARE_MAX_IMAGES:
        return "r"
    if image_count <= LVIS_COMMON_MAX_IMAGES:
        return "c"
    return "f"


def _ann_names(kind: str) -> dict:
    if kind == "coco":
        return {"train": "annotations/instances_train.json", "val": "annotations/instances_val.json"}
    return {"train": "annotations/lvis_v1_train.json", "val": "annotations/lvis_v1_val.json"}


def _dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def _write_dataset(p: SyntheticParams, out: Path) -> None:
    cats = categories(p.kind)
    n_train, n_val = p.train_images, p.val_images
    tr_imgs, tr_anns, tr_rng = _generate_split(p, "train", n_train, 1, cats, out)
    va_imgs, va_anns, va_rng = _generate_split(p, "val", n_val, n_train + 1, cats, out)
    names = _ann_names(p.kind)
    if p.kind == "coco":
        _dump_json(out / names["train"], _coco_json(p, cats, tr_imgs, tr_anns))
        _dump_json(out / names["val"], _coco_json(p, cats, va_imgs, va_anns))
    else:
        _lvis_postprocess(cats, tr_imgs, tr_anns, tr_rng, "train")
        _lvis_postprocess(cats, va_imgs, va_anns, va_rng, "val")
        lvis_cats = _lvis_categories(cats, tr_anns)
        for split, imgs, anns in (("train", tr_imgs, tr_anns), ("val", va_imgs, va_anns)):
            _dump_json(
                out / names[split],
                {
                    "info": {"description": "harness synthetic (lvis)", "version": str(GENERATOR_VERSION), "params": p.to_dict()},
                    "licenses": [],
                    "images": imgs,
                    "annotations": [a for a_ in anns for a in a_],
                    "categories": lvis_cats,
                },
            )
    (out / "params.json").write_text(json.dumps({"params": p.to_dict(), "version": GENERATOR_VERSION}, indent=2, sort_keys=True) + "\n")


def dataset_paths(root: Path | str) -> DatasetPaths:
    """Describe a generated dataset from its ``params.json``."""
    root = Path(root)
    meta_file = root / "params.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"not a synthetic dataset: {meta_file} does not exist")
    meta = json.loads(meta_file.read_text())
    p = SyntheticParams(**meta["params"])
    names = _ann_names(p.kind)
    thr = None
    if p.kind == "lvis":
        # the same absolute image count as LVIS v1's 1e-3 threshold (≈ 100 images), see docs
        thr = min(1.0, LVIS_OVERSAMPLE_THR * LVIS_V1_TRAIN_IMAGES / p.train_images)
    return DatasetPaths(
        kind=p.kind,
        source="synthetic",
        root=root,
        ann_files={s: root / names[s] for s in ("train", "val")},
        img_prefix={"train": "train/", "val": "val/"} if p.kind == "coco" else {"train": "", "val": ""},
        num_classes=len(categories(p.kind)),
        classes=class_names(p.kind),
        oversample_thr=thr,
        params=p.to_dict(),
    )


def is_current(root: Path | str, params: SyntheticParams) -> bool:
    """Whether ``root`` holds the dataset of ``params`` made by this generator version."""
    meta_file = Path(root) / "params.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return False
    return meta == {"params": params.to_dict(), "version": GENERATOR_VERSION}


def generate_synthetic(params: SyntheticParams, out: Path | str, *, overwrite: bool = False) -> DatasetPaths:
    """Write a dataset to ``out`` (atomically: a sibling temporary folder renamed into place).

    ``out`` must not exist, be an empty folder, or (``overwrite=True``) be replaced as a whole.
    """
    params.validate()
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temporary_folder(out.parent, f".{out.name}.tmp-")  # mode 0777 less the umask (mkdtemp: 0700)
    try:
        _write_dataset(params, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "d")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_paths(out)


def _remove_stale_temporaries(target: Path, max_age_s: float = 86400.0) -> None:
    """Remove temporary folders of ``target`` left by killed generations (older than a day)."""
    now = time.time()
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass


def synthetic_cache_dir(params: SyntheticParams, cache_dir: Path | str | None = None) -> Path:
    base = Path(cache_dir).expanduser() if cache_dir is not None else _env_data_dir()
    return base / "synthetic" / f"{params.kind}-{params.key()}"


def ensure_synthetic(
    kind: str | None = None, params: SyntheticParams | None = None, cache_dir: Path | str | None = None
) -> DatasetPaths:
    """The dataset for ``params`` (default: :meth:`SyntheticParams.default` of ``kind``, itself defaulting to
    ``"coco"``), generated once and
    cached under ``cache_dir`` (default ``$HARNESS_DATA_DIR`` or ``<repo>/data``) in
    ``synthetic/<kind>-<hash>/``. Safe when several processes ask at once: each writes a temporary folder
    and the first rename wins."""
    if params is None:
        params = SyntheticParams.default(kind or "coco")
    elif kind is not None and params.kind != kind:
        raise ValueError(f"kind {kind!r} does not match params.kind {params.kind!r}")
    params.validate()
    target = synthetic_cache_dir(params, cache_dir)
    if (target / "params.json").is_file():
        return dataset_paths(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    tmp = make_temporary_folder(target.parent, f".{target.name}.tmp-")  # 0777 less the umask (mkdtemp: 0700)
    try:
        _write_dataset(params, tmp)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if not (target / "params.json").is_file():  # not a concurrent winner: a real failure
                raise OSError(f"cannot place the synthetic dataset at {target} ({exc.strerror}); remove that folder") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset_paths(target)


def summary(paths: DatasetPaths) -> dict:
    """Counts of a generated dataset: images, instances, categories, and LVIS frequency groups."""
    out = {"kind": paths.kind, "root": str(paths.root), "categories": paths.num_classes}
    for split in ("train", "val"):
        d = json.loads(Path(paths.ann_files[split]).read_text())
        out[f"{split}_images"] = len(d["images"])
        out[f"{split}_instances"] = len(d["annotations"])
        if split == "train" and paths.kind == "lvis":
            freq = [c["frequency"] for c in d["categories"]]
            out["frequency"] = {g: freq.count(g) for g in "rcf"}
    return out
