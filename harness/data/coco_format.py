"""Your own data: any COCO-format dataset (a spec's ``dataset: {kind: coco_format, ...}``).

A dataset entry names its two splits, each an annotation file and an image folder::

    {"kind": "coco_format", "name": "my-parts",
     "train": {"ann": "/abs/train.json", "images": "/abs/images"},
     "val":   {"ann": "/abs/val.json",   "images": "/abs/images"}}

(the spec loader resolves paths relative to the spec file's folder, :func:`resolve_paths`). Classes are
the annotation file's categories in file order: any names, any ids. Crowd regions (``iscrowd: 1``) are
ignored in training and in evaluation as COCO does; masks come from polygons or RLE where present.

:func:`check_dataset` finds every problem before anything trains, one line each naming the file and the
fix (:class:`DataProblems`); :func:`mask_coverage` says whether every annotation has a mask (what the
mask detectors need); :func:`coco_format_paths` gives the run its :class:`DatasetPaths`;
:func:`inspect` / :func:`inspection_lines` summarise an annotation file (``harness data inspect``).
Standard library only, plus the image folder's listing and each image's header (Pillow); the format and
the checks: ``docs/data-evaluation.md`` ("Your own data").
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
from pathlib import Path
from typing import Any, Mapping

from harness.data.paths import DatasetPaths

KIND = "coco_format"
SPLITS = ("train", "val")
SPLIT_KEYS = ("ann", "images")
#: COCO's object sizes by area (pixels²): small below 32², large above 96² (COCOeval's ranges).
SMALL_AREA, LARGE_AREA = 32 ** 2, 96 ** 2
#: How far (pixels) a box may reach past its image's border before it counts as outside: annotation tools
#: and converters round coordinates, and COCO 2017 itself has boxes a fraction of a pixel over the edge.
BORDER_TOLERANCE = 1.0
#: How many examples a problem line names (absent images, bad boxes ...).
EXAMPLES = 3

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
_ANN_IDS = ("id", "image_id", "category_id")
_CAT_KEYS = ("id", "name")


class DataProblems(ValueError):
    """A dataset that cannot train: ``problems`` holds one line per problem (the file and the fix)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _first(items: list, n: int = EXAMPLES) -> str:
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (", ..." if len(items) > n else "")


# ------------------------------------------------------------------------------------------------ paths


def resolve_paths(raw: Mapping[str, Any], base: str | Path) -> dict:
    """``{"train": {"ann", "images"}, "val": {...}}`` with every path absolute: as given when absolute
    (``~`` expanded), else relative to ``base`` (the spec file's folder). Nothing is checked here."""
    out = {}
    for split in SPLITS:
        out[split] = {}
        for key in SPLIT_KEYS:
            p = os.path.expanduser(str(raw[split][key]))
            out[split][key] = os.path.normpath(p if os.path.isabs(p) else os.path.join(os.path.abspath(base), p))
    return out


# ------------------------------------------------------------------------------------------------ reading

_CACHE: dict[tuple, dict] = {}
#: What :func:`json.detect_encoding` finds in a file that is not plain UTF-8 (exporters and Windows tools write these).
_ENCODINGS = {"utf-8-sig": "starts with a UTF-8 byte-order mark", "utf-16": "is UTF-16 text (with a byte-order mark)",
              "utf-16-le": "is UTF-16 text", "utf-16-be": "is UTF-16 text", "utf-32": "is UTF-32 text",
              "utf-32-le": "is UTF-32 text", "utf-32-be": "is UTF-32 text"}


def read_annotations(path: str | Path) -> dict:
    """The parsed annotation file (kept per process while the file is unchanged: the checks, the mask
    check and the inspection each read it). :class:`DataProblems` (one line) when it is not a readable
    JSON object."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise DataProblems([f"{p}: annotation file does not exist; fix the path"]) from None
    if not p.is_file():
        raise DataProblems([f"{p}: is not a file; give the COCO annotation JSON file"])
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        try:
            raw = p.read_bytes()
            encoding = json.detect_encoding(raw)
            if encoding != "utf-8":  # json reads these; pycocotools and mmdet open the file as UTF-8 and fail
                raise DataProblems([f"{p}: {_ENCODINGS.get(encoding, encoding)}, which pycocotools and mmdet cannot "
                                    "read (they open it as UTF-8); save it as UTF-8 without a byte-order mark, e.g. "
                                    f"python -c \"import sys; d = open(sys.argv[1], encoding='{encoding}').read(); "
                                    f"open(sys.argv[1], 'w', encoding='utf-8').write(d)\" {shlex.quote(str(p))}"])
            data = json.loads(raw.decode("utf-8"))
        except json.JSONDecodeError as exc:
            raise DataProblems([f"{p}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}); "
                                "fix the file or export it again"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataProblems([f"{p}: cannot be read ({exc}); check its permissions and encoding"]) from None
        if not isinstance(data, dict):
            raise DataProblems([f"{p}: a COCO annotation file is a JSON object with images, annotations and "
                                "categories; this one is not an object"])
        if len(_CACHE) >= 2:  # a dataset's two files are what the callers need; never hold more big ones
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = data
    return _CACHE[key]


# ------------------------------------------------------------------------------------------------ checks


def check_file(data: dict, path: str | Path) -> list[str]:
    """The problems of one parsed annotation file by itself (keys, ids, boxes, categories, annotations)."""
    where = str(path)
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return [f"{where}: no {' / '.join(repr(k) for k in missing)} list; a COCO annotation file has images, "
                "annotations and categories lists (export it in COCO format)"]
    problems = []

    def entries(name: str, keys: tuple) -> dict:
        seen: dict = {}
        lacking, repeated = [], []
        for i, e in enumerate(data[name]):
            absent = [k for k in keys if not isinstance(e, dict) or k not in e]
            if absent or not _int(e.get("id")):
                lacking.append((i, absent or ["id (an integer)"]))
            if not isinstance(e, dict) or not _int(e.get("id")):
                continue
            if e["id"] in seen:
                repeated.append(e["id"])
            seen[e["id"]] = e  # known by its id even when other keys lack (reported once, above)
        if lacking:
            i, absent = lacking[0]
            problems.append(f"{where}: {len(lacking)} of {len(data[name])} {name} lack COCO keys (first: "
                            f"{name}[{i}] has no {', '.join(absent)}); every entry needs {', '.join(keys)}")
        if repeated:
            problems.append(f"{where}: {name} ids repeat ({_first(sorted(set(repeated)))}); give each entry "
                            "its own id")
        return seen

    images = entries("images", _IMAGE_KEYS)
    cats = entries("categories", _CAT_KEYS)
    if not data["categories"]:
        problems.append(f"{where}: no categories; list the classes in 'categories' ({{id, name}} each)")
    sized = {k: i for k, i in images.items() if "height" in i and "width" in i}
    bad_size = [i["id"] for i in sized.values() if not (_int(i["height"]) and _int(i["width"])
                                                        and i["height"] > 0 and i["width"] > 0)]
    if bad_size:
        problems.append(f"{where}: {len(bad_size)} images have no positive integer height and width (ids "
                        f"{_first(bad_size)}); write each image's size in pixels")
    names: dict = {}
    for c in cats.values():
        names.setdefault(str(c.get("name")), []).append(c["id"])
    twice = {n: ids for n, ids in names.items() if len(ids) > 1}
    if twice:
        n, ids = next(iter(twice.items()))
        problems.append(f"{where}: category names repeat ({n!r} is ids {', '.join(map(str, ids))}); mmdet tells "
                        "classes apart by name, so give each category its own name")
    anns = [a for a in data["annotations"] if isinstance(a, dict) and all(k in a for k in _ANN_KEYS)]
    lacking = len(data["annotations"]) - len(anns)
    if lacking:
        i = next(i for i, a in enumerate(data["annotations"]) if not (isinstance(a, dict)
                                                                      and all(k in a for k in _ANN_KEYS)))
        absent = [k for k in _ANN_KEYS if not isinstance(data["annotations"][i], dict)
                  or k not in data["annotations"][i]]
        problems.append(f"{where}: {lacking} of {len(data['annotations'])} annotations lack COCO keys (first: "
                        f"annotations[{i}] has no {', '.join(absent)}); every annotation needs "
                        f"{', '.join(_ANN_KEYS)}")
    not_int = [a for a in anns if not all(_int(a[k]) for k in _ANN_IDS)]
    if not_int:  # "9" for 9 (some exporters write text), or worse: every check below looks ids up
        shown = sorted({json.dumps(a[k])[:20] for a in not_int for k in _ANN_IDS if not _int(a[k])})
        where_ids = [json.dumps(a["id"])[:20] for a in not_int]
        problems.append(f"{where}: {len(not_int)} annotations have an {' / '.join(_ANN_IDS)} that is not an integer "
                        f"(annotation ids {_first(where_ids)}; values {_first(shown)}); COCO ids are integers: "
                        "write 9, not \"9\"")
        anns = [a for a in anns if all(_int(a[k]) for k in _ANN_IDS)]
    ids = [a["id"] for a in anns]
    if len(set(ids)) != len(ids):
        seen, rep = set(), set()
        for x in ids:
            (rep if x in seen else seen).add(x)
        problems.append(f"{where}: annotation ids repeat ({_first(sorted(rep, key=str))}); mmdet needs each "
                        "annotation to have its own id")
    unknown_img = [a["id"] for a in anns if a["image_id"] not in images]
    if unknown_img:
        problems.append(f"{where}: {len(unknown_img)} annotations name an image not in 'images' (annotation ids "
                        f"{_first(unknown_img)}); add the images or remove those annotations")
    unknown_cat = sorted({a["category_id"] for a in anns if a["category_id"] not in cats}, key=str)
    if unknown_cat:
        n = sum(1 for a in anns if a["category_id"] not in cats)
        problems.append(f"{where}: {n} annotations of unknown categories (category_id {_first(unknown_cat)} not in "
                        "'categories'); add those categories or remove the annotations")
    bad_box, outside, no_area = [], [], []
    for a in anns:
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box)) or box[2] <= 0 or box[3] <= 0:
            bad_box.append(f"annotation {a['id']} {json.dumps(box)[:40]}")
            continue
        img = sized.get(a["image_id"])
        if img is not None and a["image_id"] not in bad_size:
            x, y, w, h = box
            t = BORDER_TOLERANCE
            if x < -t or y < -t or x + w > img["width"] + t or y + h > img["height"] + t:
                outside.append(f"annotation {a['id']} {[round(v, 1) for v in box]} in {img.get('file_name')} "
                               f"({img['width']}×{img['height']})")
        if "area" in a and not (_num(a["area"]) and a["area"] >= 0):
            no_area.append(a["id"])
    if bad_box:
        problems.append(f"{where}: {len(bad_box)} boxes of non-positive size (first: {_first(bad_box)}); boxes are "
                        "[x, y, width, height] with width and height > 0: fix or remove them")
    if outside:
        problems.append(f"{where}: {len(outside)} boxes outside their image by more than {BORDER_TOLERANCE:g} px "
                        f"(first: {_first(outside, 2)}); fix the boxes or the images' width and height")
    if no_area:
        problems.append(f"{where}: {len(no_area)} annotations have an invalid 'area' (ids {_first(no_area)}); "
                        "write the object's area in pixels (or leave the key out)")
    crowd_off = [a for a in anns if "iscrowd" in a and not (_int(a["iscrowd"]) and a["iscrowd"] in (0, 1))]
    if crowd_off:  # mmdet and the evaluation would take any true value for a crowd region (ignored) unsaid
        bad_crowd = [a["id"] for a in crowd_off]
        shown = sorted({json.dumps(a["iscrowd"])[:20] for a in crowd_off})
        problems.append(f"{where}: {len(bad_crowd)} annotations have an 'iscrowd' other than 0 or 1 (ids "
                        f"{_first(bad_crowd)}; values {_first(shown)}); write 1 for a crowd region, 0 (or leave "
                        "the key out) for an object")
    bad_seg = [a["id"] for a in anns if not _segmentation_ok(a.get("segmentation"), images.get(a["image_id"]))]
    if bad_seg:
        problems.append(f"{where}: {len(bad_seg)} annotations have a malformed segmentation (ids {_first(bad_seg)}); "
                        "give polygons [[x1, y1, x2, y2, x3, y3, ...], ...] or RLE {size: [height, width], counts}")
    if not any(not a.get("iscrowd") for a in anns):
        problems.append(f"{where}: no annotation at all{' (only crowd regions)' if anns else ''}; a split needs "
                        "annotated objects to train or evaluate on")
    return problems


def _segmentation_ok(seg, img) -> bool:
    """Polygons (lists of at least 3 x, y pairs) or RLE of the image's size; absent or empty is fine."""
    if seg in (None, [], {}):
        return True
    if isinstance(seg, list):
        return all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(_num(v) for v in p) for p in seg)
    if isinstance(seg, dict) and "counts" in seg and isinstance(seg.get("size"), list) and len(seg["size"]) == 2:
        if not isinstance(seg["counts"], (str, list)):
            return False
        return img is None or list(seg["size"]) == [img.get("height"), img.get("width")]
    return False


def _has_mask(a: dict) -> bool:
    return a.get("segmentation") not in (None, [], {})


def check_images(data: dict, path: str | Path, images_dir: str | Path) -> list[str]:
    """Images the file lists that are not in ``images_dir`` (how many, the first few names); when all are
    there, those that are not readable images or whose size differs from the file's (:func:`_image_sizes`)."""
    folder = Path(images_dir)
    names = [str(i["file_name"]) for i in data.get("images", []) if isinstance(i, dict) and "file_name" in i]
    absent = [n for n in names if not (folder / n).is_file()]
    if not absent:
        return _image_sizes(data, path, folder)
    return [f"{path}: {len(absent)} of {len(names)} images listed are not in {folder} (first: {_first(absent)}); "
            "copy them there or point the split's 'images' at the folder holding them"]


_SIZES: dict[tuple, list[str]] = {}
#: EXIF orientations that turn a JPEG a quarter: OpenCV (mmdet's decoder) applies them, so width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


def _image_sizes(data: dict, path: str | Path, folder: Path) -> list[str]:
    """Images that are not readable images, or whose size as mmdet decodes them (OpenCV applies a JPEG's EXIF
    orientation) differs from the ``width`` and ``height`` the file gives: boxes and masks are in the
    file's pixels, so an image resized or rotated after annotating trains on misplaced boxes, unsaid.
    Reads each image's header only (Pillow); kept per process while the annotation file is unchanged."""
    try:
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns, str(folder))
    except OSError:
        key = None
    if key in _SIZES:
        return _SIZES[key]
    from PIL import Image

    listed = [i for i in data.get("images", []) if isinstance(i, dict) and "file_name" in i]
    unreadable, differ = [], []
    for i in listed:
        if not (_int(i.get("width")) and _int(i.get("height"))):
            continue  # check_file reports it
        name = str(i["file_name"])
        try:
            with Image.open(folder / name) as im:
                w, h = im.size
                if im.format == "JPEG" and im.getexif().get(0x0112) in _QUARTER_TURNS:
                    w, h = h, w
        except Exception as exc:  # noqa: BLE001 - whatever Pillow raises, the image cannot be decoded
            unreadable.append(f"{name} ({type(exc).__name__})")
            continue
        if (w, h) != (i["width"], i["height"]):
            differ.append(f"{name} is {w}×{h}, the file says {i['width']}×{i['height']}")
    problems = []
    if unreadable:
        problems.append(f"{path}: {len(unreadable)} of {len(listed)} images in {folder} are not readable images "
                        f"(first: {_first(unreadable)}); replace them with the original files")
    if differ:
        problems.append(f"{path}: {len(differ)} of {len(listed)} images in {folder} differ in size from the file's "
                        f"width and height (first: {_first(differ, 2)}); boxes and masks are in the file's pixels: "
                        "give the images annotated (not resized or rotated since) or export the annotations again")
    if key is not None:
        _SIZES[key] = problems
    return problems


def _where(name: str, split: str, key: str) -> str:
    return f"dataset {name}: {split}.{key}"


def check_dataset(entry: Mapping[str, Any], spec_file: str | Path | None = None,
                  warnings: list[str] | None = None) -> list[str]:
    """Every problem of a resolved ``coco_format`` entry: files and folders, each annotation file, the
    images each lists, and val's categories against train's. Empty when it can train. What can train but
    should be said (val images that train also lists) is appended to ``warnings`` when given.

    A pass is kept for the process while the files and folders are unchanged (:func:`_paths_key`: size and
    modification time), warnings with it, so that a run's launch, its plan's fingerprints, ``harness status``
    (once per cell) and ``doctor`` read both files and every image's header once; a failed check is
    always redone."""
    key = _paths_key(entry)  # a pass does not depend on spec_file (only a problem's wording does)
    if key is not None and key in _PASSED:
        if warnings is not None and _PASSED[key]:
            warnings.append(_PASSED[key])
        return []
    problems, warning = _check_dataset(entry, spec_file)
    if not problems and key is not None:
        _PASSED[key] = warning
    if warnings is not None and warning:
        warnings.append(warning)
    return problems


_PASSED: dict = {}  # check_dataset's key → the warning (or None) of an entry that passed, in this process


def _check_dataset(entry: Mapping[str, Any], spec_file: str | Path | None) -> tuple[list[str], str | None]:
    """:func:`check_dataset`'s work: its problems, and when there are none, its warning (or None)."""
    name = entry.get("name", "?")
    origin = f" (relative paths are read from {Path(spec_file).parent}/)" if spec_file else ""
    problems, files = [], {}
    for split in SPLITS:
        ann, images = Path(entry[split]["ann"]), Path(entry[split]["images"])
        if not ann.is_file():
            problems.append(f"{_where(name, split, 'ann')}: annotation file {ann} does not exist{origin}; fix the path")
        else:
            try:
                files[split] = read_annotations(ann)
            except DataProblems as exc:
                problems += exc.problems
        if not images.is_dir():
            problems.append(f"{_where(name, split, 'images')}: image folder {images} does not exist{origin}; fix "
                            "the path")
    for split, data in files.items():
        ann = entry[split]["ann"]
        found = check_file(data, ann)
        problems += found
        if Path(entry[split]["images"]).is_dir() and isinstance(data.get("images"), list):
            problems += check_images(data, ann, entry[split]["images"])
    if len(files) == 2 and all(isinstance(d.get("categories"), list) for d in files.values()):
        train, val = (category_pairs(files[s]) for s in SPLITS)
        if set(train) != set(val):
            only_val, only_train = sorted(set(val) - set(train)), sorted(set(train) - set(val))
            detail = "; ".join(p for p in (
                f"only in val: {_first([f'{i} {n!r}' for i, n in only_val])}" if only_val else "",
                f"only in train: {_first([f'{i} {n!r}' for i, n in only_train])}" if only_train else "") if p)
            problems.append(f"{entry['val']['ann']}: val categories differ from train's ({detail}); give both files "
                            f"the same categories list as {entry['train']['ann']}")
        else:
            problems += _unseen_in_train(files, entry)
    return problems, (None if problems else _shared_images(files, entry))


def _shared_images(files: dict, entry: Mapping[str, Any]) -> str | None:
    """A warning when val's images are also train's (the same file under the same folder: the same annotation
    file for both splits, or splits that overlap), else ``None``. Not refused (a deliberate check of
    memorisation is valid), but the tables would score each loss on images it trained on. ``files``: the
    two splits' annotation data, as :func:`check_dataset` read them."""
    names = {}
    for split in SPLITS:
        data = files[split]
        folder = os.path.abspath(entry[split]["images"])
        names[split] = [os.path.normpath(os.path.join(folder, i["file_name"])) for i in data.get("images") or []
                        if isinstance(i, dict) and isinstance(i.get("file_name"), str)]
    train = set(names["train"])
    both = [n for n in names["val"] if n in train]
    if not both:
        return None
    same = os.path.abspath(entry["train"]["ann"]) == os.path.abspath(entry["val"]["ann"])
    how = "train and val are the same annotation file" if same else \
        f"{len(both)} of {len(names['val'])} val images are also train images"
    return (f"{entry.get('name', '?')}: {how} (e.g. {_first([os.path.basename(n) for n in both])}): the tables would "
            f"score every loss on images it trained on, not on unseen ones; give val its own images (or keep this "
            f"to check memorisation on purpose)")


def _objects_per_category(data: dict, trained: bool = False) -> dict:
    """Non-crowd annotations per ``category_id`` (what training learns from and evaluation scores); with
    ``trained``, only those mmdet's training keeps (:func:`left_out_reason` gives none)."""
    images = {i.get("id"): i for i in data.get("images") or [] if isinstance(i, dict) and _int(i.get("id"))} \
        if trained else {}
    out: dict = {}
    for a in data.get("annotations") or []:
        if isinstance(a, dict) and not a.get("iscrowd") and _int(a.get("category_id")):
            if trained and left_out_reason(a, images.get(a.get("image_id")) if _int(a.get("image_id")) else None):
                continue
            out[a["category_id"]] = out.get(a["category_id"], 0) + 1
    return out


def _unseen_in_train(files: dict, entry: Mapping[str, Any]) -> list[str]:
    """Classes with objects in val and none that training learns from: none in train, or only some that
    mmdet's dataset leaves out (:data:`LEFT_OUT`). No detector can learn them, and COCO AP averages their
    (near-zero) AP into every loss's number alike, so the comparison would be read off a deflated mean."""
    listed, trained = _objects_per_category(files["train"]), _objects_per_category(files["train"], trained=True)
    val = _objects_per_category(files["val"])
    if not listed:  # no object at all: check_file says so
        return []
    unseen = [(i, n, val[i], listed.get(i, 0)) for i, n in category_pairs(files["val"])
              if val.get(i) and not trained.get(i)]
    if not unseen:
        return []
    shown = _first([f"{i} {n!r}: {k} in val" + (f", its {t} in train all left out by mmdet (zero area, a side under "
                                                  "1 px, outside the image or 'ignore')" if t else "")
                    for i, n, k, t in unseen])
    return [f"{entry['val']['ann']}: {len(unseen)} classes have objects in val but none in train that training "
            f"keeps ({shown}); no detector can learn a class it never sees: add training objects of it to "
            f"{entry['train']['ann']} (or fix the ones mmdet leaves out: harness data inspect lists them), or remove "
            "the class and its annotations from both files"]


def category_pairs(data: dict) -> list[tuple]:
    """``(id, name)`` of each category, in file order (the label order mmdet gives the classes)."""
    return [(c.get("id"), str(c.get("name"))) for c in data.get("categories", [])
            if isinstance(c, dict) and _int(c.get("id"))]  # other ids are problems of check_file


def mask_coverage(entry: Mapping[str, Any]) -> dict | None:
    """Per split, ``(annotations with a mask, annotations)``; ``None`` when a file cannot be read (the
    checks report that). Mask detectors need every annotation of both splits to have one."""
    out = {}
    for split in SPLITS:
        try:
            data = read_annotations(entry[split]["ann"])
        except DataProblems:
            return None
        anns = [a for a in data.get("annotations") or [] if isinstance(a, dict)]
        out[split] = (sum(1 for a in anns if _has_mask(a)), len(anns))
    return out


def masks_missing(coverage: Mapping[str, tuple]) -> str | None:
    """Why a mask detector cannot train on a dataset of this :func:`mask_coverage` (``None``: it can)."""
    gaps = [f"{split}: {have} of {total} annotations have a mask" for split, (have, total) in coverage.items()
            if have < total]
    return "; ".join(gaps) if gaps else None


# ------------------------------------------------------------------------------------------------ the run


def coco_format_paths(entry: Mapping[str, Any]) -> DatasetPaths:
    """The run's :class:`DatasetPaths`: mmdet's ``CocoDataset`` on the two files, classes the train file's
    category names in file order, each label's category id from there. :class:`DataProblems` when the
    dataset does not pass :func:`check_dataset` (a job started elsewhere checks again; within a process a
    pass is kept while the files are unchanged)."""
    problems = check_dataset(entry)
    if problems:
        raise DataProblems(problems)
    return _dataset_paths(entry)


def _paths_key(entry: Mapping[str, Any]) -> str | None:
    """The entry and the size and modification time of its annotation files and image folders; None when
    one of them cannot be read (the checks say why)."""
    try:
        stats = [(p, st.st_size, st.st_mtime_ns)
                 for split in SPLITS for p in (entry[split]["ann"], entry[split]["images"]) for st in [os.stat(p)]]
    except (OSError, KeyError, TypeError):
        return None
    return json.dumps([dict(entry), stats], sort_keys=True, default=str)


def _dataset_paths(entry: Mapping[str, Any]) -> DatasetPaths:
    pairs = category_pairs(read_annotations(entry["train"]["ann"]))
    folders = {s: os.path.abspath(entry[s]["images"]) for s in SPLITS}
    root = os.path.commonpath(list(folders.values()))
    prefix = {s: ("" if folders[s] == root else os.path.relpath(folders[s], root) + "/") for s in SPLITS}
    return DatasetPaths(
        kind="coco",
        source=KIND,
        root=Path(root),
        ann_files={s: Path(entry[s]["ann"]) for s in SPLITS},
        img_prefix=prefix,
        num_classes=len(pairs),
        classes=tuple(n for _, n in pairs),
        category_ids=tuple(i for i, _ in pairs),
        name=entry.get("name"),
    )


# ------------------------------------------------------------------------------------------------ inspection


def _spread(values: list) -> dict:
    if not values:
        return {"min": 0, "median": 0, "max": 0, "mean": 0.0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "mean": round(sum(values) / len(values), 2)}


#: Why mmdet's ``CocoDataset.parse_data_info`` leaves a (valid) annotation out of training, in the order it
#: tests them: an ``ignore`` flag, a box with no overlap with its image, ``area <= 0``, a side under 1 px.
LEFT_OUT = {"ignore_flag": "'ignore': true", "outside_image": "outside the image", "zero_area": "zero area",
            "side_under_1px": "a side under 1 px"}


def left_out_reason(a: dict, img: dict | None) -> str | None:
    """The :data:`LEFT_OUT` key of why mmdet's training skips annotation ``a`` of image ``img``, or ``None``
    (it trains on it, or the checks refuse it). A missing ``area`` is the box's, as the run's
    ``CocoFormatDataset`` gives it: never zero area by itself."""
    box = a.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box)):
        return None
    if a.get("ignore", False):
        return "ignore_flag"
    x, y, w, h = box
    if img is not None and _num(img.get("width")) and _num(img.get("height")):
        if max(0, min(x + w, img["width"]) - max(x, 0)) * max(0, min(y + h, img["height"]) - max(y, 0)) == 0:
            return "outside_image"
    area = a.get("area", w * h)
    if not _num(area):
        return None
    if area <= 0:
        return "zero_area"
    if w < 1 or h < 1:
        return "side_under_1px"
    return None


def inspect(data: dict) -> dict:
    """What a user should know of an annotation file before comparing losses on it: images, instances per
    class (min / median / max, the rarest), objects per image, box sizes against COCO's small / medium /
    large (by the annotation's area, as COCOeval ranks them; the box's when it has none), masks, crowd
    regions, and the instances mmdet's training leaves out (valid COCO, skipped unsaid: :data:`LEFT_OUT`).
    Crowd regions are counted apart, never as instances. Tolerates malformed entries (skipped)."""
    images = [i for i in data.get("images") or [] if isinstance(i, dict)]
    cats = [c for c in data.get("categories") or [] if isinstance(c, dict) and _int(c.get("id"))]
    anns = [a for a in data.get("annotations") or [] if isinstance(a, dict)]
    objects = [a for a in anns if not a.get("iscrowd")]
    crowd = len(anns) - len(objects)
    per_class = {c.get("id"): 0 for c in cats}
    for a in objects:
        if _int(a.get("category_id")) and a["category_id"] in per_class:  # an unhashable id is a problem, not a crash
            per_class[a["category_id"]] += 1
    per_image = {i.get("id"): 0 for i in images if _int(i.get("id"))}
    for a in objects:
        if _int(a.get("image_id")) and a["image_id"] in per_image:
            per_image[a["image_id"]] += 1
    sizes = {"small": 0, "medium": 0, "large": 0}
    for a in objects:
        area = a.get("area")
        if not _num(area):
            box = a.get("bbox")
            area = box[2] * box[3] if isinstance(box, list) and len(box) == 4 and all(_num(v) for v in box) else None
        if area is not None:
            sizes["small" if area < SMALL_AREA else "large" if area > LARGE_AREA else "medium"] += 1
    by_id = {i.get("id"): i for i in images if _int(i.get("id"))}
    left_out = {k: 0 for k in LEFT_OUT}
    for a in objects:
        why = left_out_reason(a, by_id.get(a.get("image_id")) if _int(a.get("image_id")) else None)
        if why:
            left_out[why] += 1
    names = {c.get("id"): str(c.get("name")) for c in cats}
    rarest = sorted(per_class.items(), key=lambda kv: (kv[1], str(kv[0])))[:5]
    masks = sum(1 for a in anns if _has_mask(a))
    polygons = sum(1 for a in anns if isinstance(a.get("segmentation"), list) and a["segmentation"])
    dims = sorted({(i.get("width"), i.get("height")) for i in images if _num(i.get("width")) and _num(i.get("height"))},
                  key=str)
    return {
        "images": len(images),
        "images_without_objects": sum(1 for n in per_image.values() if n == 0),
        "image_sizes": {"distinct": len(dims), "examples": [f"{w}×{h}" for w, h in dims[:3]]},
        "classes": len(cats),
        "instances": len(objects),
        "instances_per_class": _spread(list(per_class.values())),
        "rarest_classes": [{"id": i, "name": names[i], "instances": n} for i, n in rarest],
        "classes_without_instances": sum(1 for n in per_class.values() if n == 0),
        "objects_per_image": _spread(list(per_image.values())),
        "box_sizes": sizes,
        "masks": {"annotations_with_mask": masks, "polygons": polygons, "rle": masks - polygons,
                  "of": len(anns), "state": "all" if anns and masks == len(anns) else "none" if masks == 0 else "some"},
        "crowd_regions": crowd,
        "left_out_of_training": {"total": sum(left_out.values()), "of": len(objects), **left_out},
    }


def inspection_lines(info: dict) -> list[str]:
    """:func:`inspect`'s result as the lines ``harness data inspect`` prints."""
    ipc, opi, sizes, m = info["instances_per_class"], info["objects_per_image"], info["box_sizes"], info["masks"]
    total = sum(sizes.values()) or 1
    rare = ", ".join(f"{r['name']} (id {r['id']}): {r['instances']}" for r in info["rarest_classes"])
    mask_text = {"all": f"every annotation has one ({m['polygons']} polygons, {m['rle']} RLE): mask detectors can train",
                 "none": "none: boxes only (Mask R-CNN, YOLACT and SOLOv2 cannot train on it)",
                 "some": f"{m['annotations_with_mask']} of {m['of']} annotations have one: mask detectors need every "
                         "annotation to have a mask"}[m["state"]]
    dims = info["image_sizes"]
    return [
        f"images: {info['images']} ({info['images_without_objects']} without objects; {dims['distinct']} distinct "
        f"size(s), e.g. {', '.join(dims['examples']) or '-'})",
        f"classes: {info['classes']} ({info['classes_without_instances']} without instances)",
        f"instances: {info['instances']}; per class min {ipc['min']} / median {ipc['median']:g} / max {ipc['max']}",
        f"rarest classes: {rare or '-'}",
        f"objects per image: min {opi['min']} / median {opi['median']:g} / max {opi['max']} (mean {opi['mean']:g})",
        "box sizes (COCO ranges by area): " + ", ".join(
            f"{k} {v} ({100 * v / total:.0f} %)" for k, v in sizes.items())
        + f"  [small < {SMALL_AREA}, large > {LARGE_AREA} px²]",
        f"masks: {mask_text}",
        f"crowd regions: {info['crowd_regions']} (ignored in training and evaluation, as COCO does)",
        _left_out_line(info["left_out_of_training"]),
    ]


def _left_out_line(out: dict) -> str:
    if not out["total"]:
        return ("left out of training: none (mmdet skips instances of zero area, with a side under 1 px or "
                "outside the image)")
    why = ", ".join(f"{text} {out[k]}" for k, text in LEFT_OUT.items() if out[k])
    return (f"left out of training: {out['total']} of {out['of']} instances ({why}): valid COCO, but mmdet's "
            "dataset skips them; fix them if they are objects to learn")
