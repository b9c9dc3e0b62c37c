"""Reading and checking ground truth and detections (COCO / LVIS v1 JSON, or the same as Python objects).

Everything wrong with an input is an :class:`EvaluationError` with a one-line message saying which file or
which detection is wrong and how; nothing downstream (pycocotools, lvis) is reached with bad data.

Shapes accepted
---------------
Ground truth: a COCO or LVIS v1 annotation dict (or a path to its JSON) with ``images`` (``id``;
``height``/``width`` for masks; LVIS: ``neg_category_ids`` and ``not_exhaustive_category_ids``),
``categories`` (``id``; LVIS: ``frequency`` in r/c/f) and ``annotations`` (``id``, ``image_id``,
``category_id``, ``bbox`` [x, y, w, h]; ``segmentation`` (polygons or RLE) for masks; ``area`` and
``iscrowd`` optional: filled in when missing).

Detections: a list (or a path to a JSON list) of ``{"image_id", "category_id", "score", "bbox":
[x, y, w, h]}`` with ``"segmentation"`` (RLE ``{"size": [h, w], "counts": ...}`` or polygons) for mask
evaluation — the COCO results format. A mask-only detection gets its box from the mask.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IOU_TYPES = ("bbox", "segm")
KINDS = ("coco", "lvis")
FREQUENCIES = ("r", "c", "f")


class EvaluationError(ValueError):
    """Bad evaluation input; the message is one line naming the problem."""


def _load_json(path, what: str):
    p = Path(path).expanduser()
    if not p.exists():
        raise EvaluationError(f"{what} file {p} does not exist")
    if not p.is_file():
        raise EvaluationError(f"{what} file {p} is not a file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"cannot read {what} file {p}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"{what} file {p} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


def _is_num(x) -> bool:
    """A finite real number, not a bool (an int too large for a float is not one)."""
    kind = type(x)
    if kind is float:  # what JSON numbers load as, checked first: a detections file has millions
        return math.isfinite(x)
    if kind is not int and (not isinstance(x, numbers.Real) or isinstance(x, bool)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_box(box, where: str) -> list[float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_num(v) for v in box):
        raise EvaluationError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {_short(box)}")
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        raise EvaluationError(f"{where}: box {_short(box)} has negative {'width' if w < 0 else 'height'} (format is [x, y, w, h])")
    return [x, y, w, h]


def _short(x, n: int = 60) -> str:
    s = json.dumps(x) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


_SHORT_RLE = 256  # bytes: a shorter string is checked one byte at a time (numpy's per-call cost dominates)


def _rle_string_ok(counts: bytes, height: int, width: int) -> bool:
    """Whether a compressed RLE string (pycocotools' format: run lengths as 5-bit groups offset by 48,
    0x20 = more groups follow, 0x10 in the last group = negative; from the third run on each is stored
    as the difference to the run two before) decodes to non-negative runs covering height × width
    pixels exactly. pycocotools decodes without bounds checks, so a bad string must not reach it.
    A short string (a small mask, such as every tiny-profile detection's) is read byte by byte, a long
    one with numpy; both give the same answer (``tests/test_evaluation.py``)."""
    if len(counts) <= _SHORT_RLE:
        return _rle_string_ok_bytes(counts, height, width)
    return _rle_string_ok_numpy(counts, height, width)


def _rle_string_ok_bytes(counts: bytes, height: int, width: int) -> bool:
    """:func:`_rle_string_ok` one byte at a time."""
    runs: list[int] = []
    total = value = shift = 0
    for byte in counts:
        c = byte - 48
        if c < 0 or c > 63 or shift > 55:  # not a 6-bit group, or a 13th group (more than 60 bits)
            return False
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:  # more groups follow
            continue
        if c & 0x10:  # the last group's sign bit
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return False
        runs.append(value)
        total += value
        value = shift = 0
    return shift == 0 and total == height * width


def _rle_string_ok_numpy(counts: bytes, height: int, width: int) -> bool:
    """:func:`_rle_string_ok` with numpy, for long strings."""
    raw = np.frombuffer(counts, dtype=np.uint8)
    if raw.size == 0:
        return height * width == 0
    if raw.min() < 48 or raw.max() > 111:
        return False
    c = raw.astype(np.int64) - 48
    ends = (c & 0x20) == 0
    if not ends[-1]:
        return False
    group = np.concatenate([[0], np.cumsum(ends)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
    pos = np.arange(c.size) - starts[group]
    if pos.max() > 11:  # more than 60 bits: not a run length
        return False
    x = np.zeros(starts.size, dtype=np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * pos))
    last = np.flatnonzero(ends)
    neg = (c[last] & 0x10) != 0
    x[neg] -= np.left_shift(np.int64(1), 5 * (pos[last][neg] + 1))
    runs = x.copy()
    runs[2::2] = np.cumsum(x[2::2])
    if x.size > 3:
        runs[3::2] = np.cumsum(x[3::2]) + x[1]
    return bool((runs >= 0).all() and runs.sum() == height * width)


def _rle_size_ok(size) -> bool:
    """Whether an RLE's ``size`` is ``[height, width]``, two non-negative integers."""
    return isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)


_BATCH_AREA = 1 << 31  # a mask of at least this many pixels is checked alone (keeps the batch's sums in int64)


def rle_strings_ok(strings: list[bytes], sizes: list[tuple[int, int]]) -> np.ndarray:
    """:func:`_rle_string_ok` of many strings at once (one boolean each), with a few numpy passes over
    their concatenation instead of a Python call per string (the 5,000 masks of a tiny-profile Mask R-CNN
    run's predictions: 121 ms against 357 ms, a quarter of that run's evaluation). Groups never run across
    strings (a string's last byte always ends one), and a run length larger than the mask's pixels
    (impossible in a valid string) marks the string invalid before the sums, so no string's verdict
    depends on another's. ``tests/test_evaluation.py`` compares it with
    the byte-by-byte check on real and corrupted strings."""
    count = len(strings)
    ok = np.ones(count, dtype=bool)
    areas = [int(h) * int(w) for h, w in sizes]
    batch = [i for i in range(count) if strings[i] and areas[i] < _BATCH_AREA]
    for i in range(count):
        if not strings[i]:
            ok[i] = areas[i] == 0
        elif areas[i] >= _BATCH_AREA:
            ok[i] = _rle_string_ok(strings[i], *sizes[i])
    if not batch:
        return ok
    lengths = np.array([len(strings[i]) for i in batch], dtype=np.int64)
    area = np.array([areas[i] for i in batch], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    last = first + lengths - 1
    raw = np.frombuffer(b"".join(strings[i] for i in batch), dtype=np.uint8)
    index = np.int32 if raw.size < (1 << 31) else np.int64
    string = np.repeat(np.arange(len(batch), dtype=index), lengths)
    bad = np.zeros(len(batch), dtype=bool)
    bad[string[(raw < 48) | (raw > 111)]] = True  # not a 6-bit group
    c = raw - np.uint8(48)  # wraps for the bad bytes, whose strings are already marked
    ends = (c & 0x20) == 0
    bad[~ends[last]] = True  # the last group is unfinished
    ends[last] = True  # so that no group runs into the next string
    opens = np.concatenate([[True], ends[:-1]])
    starts = np.flatnonzero(opens).astype(index)
    pos = np.arange(raw.size, dtype=index) - np.repeat(starts, np.diff(np.append(starts, raw.size)))
    bad[string[pos > 11]] = True  # more than 60 bits: not a run length
    shift = (5 * np.minimum(pos, 11)).astype(np.int64)
    x = np.add.reduceat((c & 0x1F).astype(np.int64) << shift, starts)
    closing = np.flatnonzero(ends)  # each group's last byte, group by group
    x -= np.where((c[closing] & 0x10) != 0, np.left_shift(np.int64(1), shift[closing] + 5), 0)
    owner = string[starts]  # the string of each group (a run length)
    too_big = np.abs(x) > area[owner]
    bad[owner[too_big]] = True
    x[too_big] = 0
    first_group = np.searchsorted(owner, np.arange(len(batch)))
    k = np.arange(x.size) - first_group[owner]  # the run's index in its string
    odd = (k & 1) == 1
    runs = x
    for chain in (~odd & (k >= 2), odd):  # run k = x_k + run k-2 from k = 3 on
        summed = np.cumsum(np.where(chain, x, 0))
        runs = np.where(chain, summed - np.concatenate([[0], summed])[first_group][owner], runs)
    bad[owner[runs < 0]] = True
    bad |= np.add.reduceat(runs, first_group) != area
    ok[batch] = ~bad
    return ok


def compressed_rle_verdicts(segms: list) -> list[bool | None]:
    """For each segmentation of a list, whether its compressed RLE string is well formed
    (:func:`rle_strings_ok`, all at once), or None where it is no RLE with string counts and a valid size
    (:func:`segmentation_to_rle` checks those one at a time, with their own messages)."""
    found, strings, sizes = [], [], []
    for i, segm in enumerate(segms):
        if not (isinstance(segm, dict) and isinstance(segm.get("counts"), (str, bytes))):
            continue
        size = segm.get("size")
        if not _rle_size_ok(size):
            continue
        counts = segm["counts"]
        if isinstance(counts, str):
            if not counts.isascii():
                continue
            counts = counts.encode("ascii")
        found.append(i)
        strings.append(counts)
        sizes.append((int(size[0]), int(size[1])))
    verdicts: list[bool | None] = [None] * len(segms)
    for i, good in zip(found, rle_strings_ok(strings, sizes)):
        verdicts[i] = bool(good)
    return verdicts


def segmentation_to_rle(segm, height: int, width: int, where: str,
                        counts_ok: bool | None = None) -> dict:
    """Polygons, uncompressed or compressed RLE → compressed RLE (``counts`` as str); checked.
    ``counts_ok``: a compressed string's verdict already taken (:func:`compressed_rle_verdicts`)."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segm, list):
            if not segm or not all(
                isinstance(p, (list, tuple)) and len(p) >= 6 and len(p) % 2 == 0 and all(_is_num(v) for v in p) for p in segm
            ):
                raise EvaluationError(f"{where}: polygon segmentation must be lists of at least 3 x, y pairs")
            if height is None or width is None:
                raise EvaluationError(f"{where}: polygons need the image's height and width in the ground truth")
            rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in segm], height, width))
        elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
            size = segm["size"]
            if not _rle_size_ok(size):
                raise EvaluationError(f"{where}: RLE size must be [height, width], got {_short(size)}")
            if height is not None and width is not None and list(size) != [height, width]:
                raise EvaluationError(f"{where}: RLE size {list(size)} differs from the image size [{height}, {width}]")
            counts = segm["counts"]
            if isinstance(counts, list):
                if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != size[0] * size[1]:
                    raise EvaluationError(f"{where}: uncompressed RLE counts must be non-negative and sum to height × width")
                rle = mask_utils.frPyObjects(dict(segm, size=list(size)), size[0], size[1])
            elif isinstance(counts, (str, bytes)):
                data = counts.encode("ascii") if isinstance(counts, str) else counts
                if not (_rle_string_ok(data, size[0], size[1]) if counts_ok is None else counts_ok):
                    raise EvaluationError(f"{where}: malformed segmentation (RLE counts do not decode to {size[0]} × {size[1]} pixels)")
                rle = {"size": [int(size[0]), int(size[1])], "counts": data}
            else:
                raise EvaluationError(f"{where}: RLE counts must be a string or a list of integers")
        else:
            raise EvaluationError(f"{where}: segmentation must be polygons or an RLE dict with size and counts")
    except EvaluationError:
        raise
    except Exception as exc:  # pycocotools raises plain Exceptions on malformed input
        raise EvaluationError(f"{where}: malformed segmentation ({exc})") from None
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


@dataclass
class GroundTruth:
    """A checked ground-truth dataset: ``data`` is a private copy (annotations copied one level deep),
    safe to hand to pycocotools / lvis which write into annotation dicts."""

    data: dict
    kind: str
    source: str
    images: dict = field(default_factory=dict)  # id -> image dict
    categories: dict = field(default_factory=dict)  # id -> category dict
    has_segm: bool = False

    def fresh(self) -> dict:
        """A copy of the dataset whose annotation dicts may be modified by an evaluator."""
        return {**self.data, "annotations": [dict(a) for a in self.data["annotations"]]}


def load_ground_truth(gt, kind: str = "coco", iou_types=("bbox",)) -> GroundTruth:
    """Read (path) or take (dict) a ground-truth dataset and check it for ``kind`` and ``iou_types``."""
    if kind not in KINDS:
        raise EvaluationError(f"unknown kind {kind!r}; choose coco or lvis")
    if isinstance(gt, GroundTruth):
        gt = gt.data
    if isinstance(gt, (str, Path)):
        source = str(gt)
        data = _load_json(gt, "ground-truth")
    else:
        source = "ground truth"
        data = gt
    if not isinstance(data, dict):
        raise EvaluationError(f"{source}: ground truth must be a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvaluationError(f"{source}: ground truth has no '{key}' list (COCO / LVIS annotation format expected)")
    images: dict = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise EvaluationError(f"{source}: images[{i}] has no integer 'id'")
        if img["id"] in images:
            raise EvaluationError(f"{source}: image id {img['id']} appears twice")
        if kind == "lvis":
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                if not isinstance(img.get(key), list):
                    raise EvaluationError(f"{source}: image {img['id']} has no '{key}' list (needed for LVIS evaluation; use --kind coco for COCO files)")
        for key in ("height", "width"):
            if key in img and not (_is_int(img[key]) and img[key] > 0):
                raise EvaluationError(f"{source}: image {img['id']} has an invalid {key} {_short(img[key])}")
        images[img["id"]] = img
    cats: dict = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise EvaluationError(f"{source}: categories[{i}] has no integer 'id'")
        if cat["id"] in cats:
            raise EvaluationError(f"{source}: category id {cat['id']} appears twice")
        if kind == "lvis" and cat.get("frequency") not in FREQUENCIES:
            raise EvaluationError(f"{source}: category {cat['id']} has no frequency r, c or f (needed for LVIS evaluation)")
        cats[cat["id"]] = cat
    if kind == "lvis":
        for img in images.values():
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                bad = [c for c in img[key] if c not in cats]
                if bad:
                    raise EvaluationError(f"{source}: image {img['id']} lists unknown category {bad[0]} in {key}")
    want_segm = "segm" in iou_types
    anns = []
    ids = [a.get("id") for a in data["annotations"] if isinstance(a, dict)]
    need_ids = len(ids) != len(data["annotations"]) or not all(_is_int(x) for x in ids) or len(set(ids)) != len(ids)
    has_segm = bool(data["annotations"])
    verdicts = compressed_rle_verdicts([a.get("segmentation") if isinstance(a, dict) else None
                                        for a in data["annotations"]]) if want_segm else []
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise EvaluationError(f"{where} is not an object")
        a = dict(ann)
        if a.get("image_id") not in images:
            raise EvaluationError(f"{where}: image_id {_short(a.get('image_id'))} is not among the images")
        if a.get("category_id") not in cats:
            raise EvaluationError(f"{where}: category_id {_short(a.get('category_id'))} is not among the categories")
        a["bbox"] = _check_box(a.get("bbox"), where)
        img = images[a["image_id"]]
        if "segmentation" in a and a["segmentation"] not in (None, [], {}):
            if want_segm:
                a["segmentation"] = segmentation_to_rle(a["segmentation"], img.get("height"), img.get("width"), where,
                                                        verdicts[i])
        else:
            has_segm = False
            a.pop("segmentation", None)
            if want_segm:
                raise EvaluationError(f"{where} has no segmentation (needed for --iou-type segm)")
        if need_ids:
            a["id"] = i + 1
        if "area" not in a or not _is_num(a["area"]):
            if want_segm and "segmentation" in a:
                from pycocotools import mask as mask_utils

                seg = a["segmentation"]
                a["area"] = float(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode("ascii")}))
            else:
                a["area"] = a["bbox"][2] * a["bbox"][3]
        a["iscrowd"] = int(bool(a.get("iscrowd", 0)))
        # One ignore rule for AP and oLRP, the one each AP implementation applies: pycocotools overwrites
        # a ground truth's ``ignore`` with its ``iscrowd``; lvis-api keeps ``ignore`` and has no crowds.
        if kind == "lvis":
            a["ignore"] = int(bool(a.get("ignore", 0)))
            a["iscrowd"] = 0
        else:
            a["ignore"] = a["iscrowd"]
        anns.append(a)
    copy = {k: v for k, v in data.items() if k not in ("annotations",)}
    copy["annotations"] = anns
    return GroundTruth(data=copy, kind=kind, source=source, images=images, categories=cats, has_segm=has_segm)


def load_detections(dets, gt: GroundTruth, iou_types=("bbox",), source: str | None = None) -> list[dict]:
    """Read (path) or take (list) detections, check them against ``gt`` and normalise them: a list of new
    dicts with ``image_id``, ``category_id``, ``score`` (float), ``bbox`` (floats) and, when mask
    evaluation is asked for, ``segmentation`` as compressed RLE (``counts`` a str). ``source`` names the
    input in messages (default: the path, or "detections")."""
    if isinstance(dets, (str, Path)):
        source = source or str(dets)
        data = _load_json(dets, "detections")
    else:
        source = source or "detections"
        data = dets
    if isinstance(data, tuple):
        data = list(data)
    if not isinstance(data, list):
        raise EvaluationError(f"{source}: detections must be a JSON list of objects (the COCO results format)")
    want_segm = "segm" in iou_types
    verdicts = compressed_rle_verdicts([d.get("segmentation") if isinstance(d, dict) else None for d in data]) \
        if want_segm else [None] * len(data)
    out = []
    for i, det in enumerate(data):
        where = f"{source}: detection {i}"
        if not isinstance(det, dict):
            raise EvaluationError(f"{where} is not an object")
        image_id, cat_id = det.get("image_id"), det.get("category_id")
        if image_id not in gt.images:
            raise EvaluationError(f"{where}: image_id {_short(image_id)} is not in the ground truth")
        if cat_id not in gt.categories:
            raise EvaluationError(f"{where}: category_id {_short(cat_id)} is not in the ground truth")
        if not _is_num(det.get("score")):
            raise EvaluationError(f"{where}: score must be a finite number, got {_short(det.get('score'))}")
        d = {"image_id": image_id, "category_id": cat_id, "score": float(det["score"])}
        img = gt.images[image_id]
        seg = det.get("segmentation")
        if want_segm:
            if seg is None:
                raise EvaluationError(f"{where} has no segmentation (needed for --iou-type segm)")
            d["segmentation"] = segmentation_to_rle(seg, img.get("height"), img.get("width"), where, verdicts[i])
        if "bbox" in det:
            d["bbox"] = _check_box(det["bbox"], where)
        elif seg is not None:
            from pycocotools import mask as mask_utils

            rle = d.get("segmentation") or segmentation_to_rle(seg, img.get("height"), img.get("width"), where)
            d["bbox"] = [float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})]
        else:
            raise EvaluationError(f"{where} has neither bbox nor segmentation")
        out.append(d)
    return out


def limit_per_image(dets: list[dict], max_dets: int) -> list[dict]:
    """Keep the ``max_dets`` highest-scoring detections of each image (LVIS: 300), order otherwise kept."""
    by_img: dict = {}
    for i, d in enumerate(dets):
        by_img.setdefault(d["image_id"], []).append(i)
    keep = set()
    for idx in by_img.values():
        if len(idx) > max_dets:
            idx = sorted(idx, key=lambda i: -dets[i]["score"])[:max_dets]
        keep.update(idx)
    return [d for i, d in enumerate(dets) if i in keep]
