"""The synthetic benchmark: determinism, caching and atomic writes, annotation consistency, the LVIS long
tail, real data roots, and loading through mmdet's own dataset classes and pipelines."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.data import (
    DataRootError,
    SyntheticParams,
    coco_paths,
    dataset_paths,
    ensure_synthetic,
    generate_synthetic,
    lvis_frequency,
    lvis_paths,
    summary,
)
from harness.data import synthetic as syn

SMALL = dict(train_images=16, val_images=6)
# pycocotools' decode with numpy 2 warns about its own __array__; nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lvis_default(tmp_path_factory):
    """The default LVIS-kind dataset (the one the LVIS rule must split into r / c / f)."""
    return ensure_synthetic("lvis", cache_dir=tmp_path_factory.mktemp("cache"))


def test_same_seed_same_bytes(tmp_path):
    p = SyntheticParams.default("coco", **SMALL)
    a = _digest(generate_synthetic(p, tmp_path / "a").root)
    b = _digest(generate_synthetic(p, tmp_path / "b").root)
    assert a == b and len(a) == 16 + 6 + 3  # images, two annotation files, params.json
    c = _digest(generate_synthetic(SyntheticParams.default("coco", seed=1, **SMALL), tmp_path / "c").root)
    assert c["params.json"] != a["params.json"] and c["train/000000000001.png"] != a["train/000000000001.png"]


def test_annotations_describe_what_is_visible(tmp_path):
    from PIL import Image

    paths = generate_synthetic(SyntheticParams.default("coco", **SMALL), tmp_path / "d")
    assert paths.classes == syn.class_names("coco") and paths.num_classes == 8
    assert dataset_paths(paths.root) == paths  # described again from its params.json
    for split in ("train", "val"):
        data = json.loads(paths.ann_files[split].read_text())
        assert [c["name"] for c in data["categories"]] == list(paths.classes)
        per_image = Counter(a["image_id"] for a in data["annotations"])
        assert len(data["images"]) == SMALL[f"{split}_images"]
        assert max(per_image.values()) <= 5 and len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        for img in data["images"]:
            im = Image.open(paths.img_dir(split) / img["file_name"])
            assert im.size == (128, 128) and im.mode == "RGB"
        for a in data["annotations"]:
            m = mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
            ys, xs = np.nonzero(m)
            assert a["area"] == m.sum() >= 8 and a["iscrowd"] == 0
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    ids = [i["id"] for s in ("train", "val") for i in json.loads(paths.ann_files[s].read_text())["images"]]
    assert len(set(ids)) == len(ids)  # unique across splits


def test_occluded_masks_do_not_overlap(tmp_path):
    # visible masks of one image are disjoint: the later object hides the earlier one
    paths = generate_synthetic(SyntheticParams.default("coco", train_images=30, val_images=1, max_objects=8), tmp_path / "o")
    data = json.loads(paths.train_ann.read_text())
    by_img = defaultdict(list)
    for a in data["annotations"]:
        by_img[a["image_id"]].append(mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}))
    assert any(len(v) >= 4 for v in by_img.values())
    for masks in by_img.values():
        assert np.sum(masks, axis=0).max() <= 1


def test_cache_is_keyed_by_parameters_and_written_atomically(tmp_path, monkeypatch):
    p = SyntheticParams.default("coco", **SMALL)
    stale = tmp_path / "synthetic" / f".coco-{p.key()}.tmp-killed"  # left by a generation killed yesterday
    stale.mkdir(parents=True)
    os.utime(stale, (1e9, 1e9))
    first = ensure_synthetic(params=p, cache_dir=tmp_path)
    assert not stale.exists()
    assert first.root == tmp_path / "synthetic" / f"coco-{p.key()}"
    stamp = first.train_ann.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(syn, "_write_dataset", lambda *a: calls.append(a))
    again = ensure_synthetic(params=p, cache_dir=tmp_path)
    assert again == first and not calls and first.train_ann.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    assert SyntheticParams.default("coco", seed=3, **SMALL).key() != p.key()

    # an interrupted generation leaves nothing behind, neither the target nor its temporary folder
    def boom(params, out):
        (out / "train").mkdir()
        (out / "train" / "half.png").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(syn, "_write_dataset", boom)
    q = SyntheticParams.default("coco", seed=5, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(params=q, cache_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(q, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [first.root.name]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_env_var_sets_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "env"))
    p = SyntheticParams.default("coco", **SMALL)
    assert ensure_synthetic(params=p).root.parent == tmp_path / "env" / "synthetic"


def test_parameters_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        SyntheticParams.default("voc")
    with pytest.raises(ValueError, match="min_size"):
        generate_synthetic(SyntheticParams(min_size=80, max_size=40), tmp_path / "x")
    with pytest.raises(ValueError, match="does not match"):
        ensure_synthetic("lvis", SyntheticParams.default("coco"), cache_dir=tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_synthetic(SyntheticParams.default("coco", **SMALL), tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_lvis_frequency_rule():
    assert [lvis_frequency(n) for n in (0, 1, 10, 11, 100, 101)] == ["r", "r", "r", "c", "c", "f"]


def test_lvis_kind_is_long_tailed_and_federated(lvis_default):
    paths = lvis_default
    assert paths.kind == "lvis" and paths.num_classes == 32 and paths.img_prefix == {"train": "", "val": ""}
    train = json.loads(paths.train_ann.read_text())
    val = json.loads(paths.val_ann.read_text())
    assert train["categories"] == val["categories"]
    images_per_cat = defaultdict(set)
    for a in train["annotations"]:
        images_per_cat[a["category_id"]].add(a["image_id"])
    groups = Counter()
    for c in train["categories"]:
        n = len(images_per_cat[c["id"]])
        assert c["image_count"] == n >= 1 and c["frequency"] == lvis_frequency(n)  # the LVIS rule itself
        groups[c["frequency"]] += 1
    assert all(groups[g] >= 5 for g in "rcf"), groups  # every group well populated
    assert {a["category_id"] for a in val["annotations"]} == {c["id"] for c in val["categories"]}
    for data, split in ((train, "train"), (val, "val")):
        present = defaultdict(set)
        for a in data["annotations"]:
            present[a["image_id"]].add(a["category_id"])
        n_not_exhaustive = 0
        for img in data["images"]:
            assert img["coco_url"].startswith(f"http://images.cocodataset.org/{split}/") and "file_name" not in img
            assert (paths.root / img["coco_url"].replace("http://images.cocodataset.org/", "")).is_file()
            assert img["neg_category_ids"] and not set(img["neg_category_ids"]) & present[img["id"]]
            assert set(img["not_exhaustive_category_ids"]) <= present[img["id"]]
            n_not_exhaustive += bool(img["not_exhaustive_category_ids"])
        assert n_not_exhaustive > 0
    info = summary(paths)
    assert info["frequency"] == {g: groups[g] for g in "rcf"}
    # repeat-factor threshold: LVIS v1's 1e-3 of 100 170 images, as a fraction of this train split
    assert paths.oversample_thr == pytest.approx(100.17 / 1200)


def test_mmdet_loads_both_kinds_with_its_pipelines(tmp_path, lvis_default):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    import mmdet.datasets  # noqa: F401  (registers the dataset classes and transforms)

    pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
        {"type": "RandomFlip", "prob": 0.5},
        {"type": "PackDetInputs"},
    ]
    coco = generate_synthetic(SyntheticParams.default("coco", **SMALL), tmp_path / "coco")
    for paths, n_train in ((coco, 16), (lvis_default, 1200)):
        cfg = paths.mmdet_dataset("train", pipeline)
        if paths.kind == "lvis":
            assert cfg["type"] == "ClassBalancedDataset" and cfg["dataset"]["type"] == "LVISV1Dataset"
        train = DATASETS.build(cfg)
        val = DATASETS.build(paths.mmdet_dataset("val", pipeline))
        assert train.metainfo["classes"] == paths.classes
        if paths.kind == "lvis":
            assert len(train) > n_train  # repeat-factor sampling repeats images of rare categories
        else:
            assert len(train) == n_train
        ann = json.loads(paths.val_ann.read_text())
        first = ann["images"][0]["id"]
        want = sorted(a["area"] for a in ann["annotations"] if a["image_id"] == first)
        item = val[0]
        gt = item["data_samples"].gt_instances
        assert item["data_samples"].img_id == first and tuple(item["inputs"].shape) == (3, 128, 128)
        assert sorted(gt.masks.masks.sum(axis=(1, 2)).tolist()) == want  # masks decoded exactly
        assert len(gt.bboxes) == len(want) and int(gt.labels.max()) < paths.num_classes
        assert len(val) == len(ann["images"])


def test_real_roots_name_the_missing_path(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_COCO_ROOT", raising=False)
    with pytest.raises(DataRootError, match="set HARNESS_COCO_ROOT"):
        coco_paths()
    with pytest.raises(DataRootError, match=f"expected {tmp_path}/annotations/instances_train2017.json"):
        coco_paths(tmp_path)
    (tmp_path / "annotations").mkdir()
    for name in ("instances_train2017.json", "instances_val2017.json", "lvis_v1_train.json", "lvis_v1_val.json"):
        (tmp_path / "annotations" / name).write_text("{}")
    with pytest.raises(DataRootError, match=f"expected {tmp_path}/train2017"):
        coco_paths(tmp_path)
    (tmp_path / "train2017").mkdir()
    (tmp_path / "val2017").mkdir()
    monkeypatch.setenv("HARNESS_COCO_ROOT", str(tmp_path))
    paths = coco_paths()
    assert paths.num_classes == 80 and paths.classes is None
    cfg = paths.mmdet_dataset("val", [])
    assert cfg["type"] == "CocoDataset" and cfg["data_prefix"] == {"img": "val2017/"} and "metainfo" not in cfg
    lv = lvis_paths(tmp_path)
    train = lv.mmdet_dataset("train", [])
    assert train["type"] == "ClassBalancedDataset" and train["oversample_thr"] == 1e-3
    assert train["dataset"]["ann_file"] == str(tmp_path / "annotations" / "lvis_v1_train.json")
    assert lv.mmdet_dataset("train", [], class_balanced=False)["type"] == "LVISV1Dataset"
    (tmp_path / "val2017").rmdir()
    with pytest.raises(DataRootError, match=f"expected {tmp_path}/val2017"):
        lvis_paths(tmp_path)
