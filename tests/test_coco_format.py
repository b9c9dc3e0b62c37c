"""Your own COCO-format data (``dataset: {kind: coco_format}``), as a user gives it to the command line.

A small dataset the tests write (tests/coco_format_data.py: classes 40, 7, 12 in that file order, PNG
images, polygon masks, a crowd region per split) trained through ``harness run --executor local --wait``
at the tiny profile with ATSS and Mask R-CNN and RS, evaluated with per-class AP in the row; a boxes-only
variant (mask detectors refused when named, left out with a note under ``detectors: all``); and each
malformed input refused with one line naming the file and the fix, exit 2, before anything trains.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from cli import harness
from coco_format_data import CATEGORIES, spec, write_dataset
from harness.experiments.spec import SpecError, load_spec
from harness.rows import read_rows

REPO = Path(__file__).resolve().parents[1]


def relative(folder: Path) -> dict:
    """The dataset's paths as a spec written into ``folder`` names them: relative to that folder."""
    return {"train": "data/train.json", "val": "data/val.json", "images": "data/images"}


@pytest.fixture()
def parts(tmp_path):
    write_dataset(tmp_path / "data")
    return tmp_path


def write_spec(folder: Path, name: str, detectors, **kw) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec(name, relative(folder), detectors, **kw), allow_unicode=True))
    return path


# ------------------------------------------------------------------------------------------------ training


def drop_area(path: Path, every: int = 2) -> None:
    """Leave ``area`` out of every ``every``-th annotation of an annotation file, as some exporters do."""
    data = json.loads(path.read_text())
    for a in data["annotations"][::every]:
        del a["area"]
    path.write_text(json.dumps(data))


@pytest.mark.slow
def test_atss_and_mask_rcnn_train_and_evaluate_on_own_data_through_the_local_executor(parts):
    for split in ("train", "val"):  # the format's optional area: half the annotations leave it out
        drop_area(parts / "data" / f"{split}.json")
    spec_path = write_spec(parts, "parts", ["atss", "mask_rcnn"])
    results = parts / "results"
    # run from another folder: the spec's relative paths are read from the spec's own folder
    proc = harness("run", str(spec_path), "--executor", "local", "--wait", "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, corrupt = read_rows(results / "parts")
    assert not corrupt and sorted(r["detector"] for r in rows) == ["atss", "mask_rcnn"]
    for row in rows:
        assert row["status"] == "done", row.get("reason")
        assert row["dataset"]["name"] == "test-parts"
        assert row["dataset"]["train"]["ann"] == str(parts / "data" / "train.json")  # absolute for every executor
        for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_oLRP"):
            assert key in row["metrics"]
        families = ["bbox", "segm"] if row["detector"] == "mask_rcnn" else ["bbox"]
        assert sorted(row["per_class"]) == families
        for fam in families:
            # one entry per category, ids and names from the file (its order is not the ids')
            assert sorted((c["id"], c["name"]) for c in row["per_class"][fam]) == sorted(
                (c["id"], c["name"]) for c in CATEGORIES)
            assert all(c["AP"] is None or 0 <= c["AP"] <= 1 for c in row["per_class"][fam])
        if row["detector"] == "mask_rcnn":
            assert "segm_AP" in row["metrics"]
    table = harness("table", str(results / "parts"))
    assert table.returncode == 0, table.stderr
    assert "## Dataset: coco_format test-parts" in table.stdout  # the tables are headed with the dataset's name


# ------------------------------------------------------------------------------------------------ spec


def test_paths_resolve_against_the_spec_folder_and_name_is_part_of_the_identity(parts):
    loaded = load_spec(write_spec(parts, "parts", ["atss"]))
    run = loaded.runs()[0]
    assert run.dataset["train"] == {"ann": str(parts / "data" / "train.json"), "images": str(parts / "data" / "images")}
    assert run.identity["dataset"]["name"] == "test-parts"
    raw = spec("parts", relative(parts), ["atss"])
    raw["dataset"]["name"] = "other-parts"
    other = parts / "other.yaml"
    other.write_text(yaml.safe_dump(raw, allow_unicode=True))
    assert load_spec(other).runs()[0].run_id != run.run_id


def test_the_run_gets_the_classes_of_the_file_and_each_label_its_category_id(parts):
    from harness.data.coco_format import coco_format_paths
    from harness.experiments.spec import RunSpec
    from harness.run.train import build_config

    run = load_spec(write_spec(parts, "parts", ["atss"])).runs()[0]
    paths = coco_format_paths(run.dataset)
    assert paths.classes == tuple(c["name"] for c in CATEGORIES) and paths.num_classes == 3
    cfg = build_config(RunSpec.from_dict(run.to_dict()), parts / "work", paths)
    assert cfg.test_evaluator["cat_ids"] == [40, 7, 12]
    # mmdet's own dataset gives label i to the i-th category of the file: the metric maps labels back alike
    from mmdet.datasets import CocoDataset

    train = cfg.train_dataloader.dataset
    ds = CocoDataset(data_root=train["data_root"], ann_file=train["ann_file"], data_prefix=train["data_prefix"],
                     metainfo=train["metainfo"], pipeline=[], filter_cfg=train["filter_cfg"])
    ann = json.loads((parts / "data" / "train.json").read_text())
    first = ds.get_data_info(0)
    expected = [[40, 7, 12].index(a["category_id"]) for a in ann["annotations"]
                if a["image_id"] == first["img_id"] and not a["iscrowd"]]
    assert sorted(i["bbox_label"] for i in first["instances"] if not i["ignore_flag"]) == sorted(expected)
    assert any(i["ignore_flag"] for d in range(len(ds)) for i in ds.get_data_info(d)["instances"])  # the crowd


def test_annotations_without_area_take_their_boxs(parts):
    """mmdet's CocoDataset reads ann['area']; the run's dataset (CocoFormatDataset) takes the box's where
    the file has none, and gives the same instances as CocoDataset on the file with the areas written."""
    from mmengine.registry import init_default_scope

    import harness.detectors.plugin  # noqa: F401  (registers CocoFormatDataset)
    from harness.data.coco_format import coco_format_paths
    from harness.experiments.spec import RunSpec
    from harness.run.train import build_config
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS

    init_default_scope("mmdet")
    run = load_spec(write_spec(parts, "parts", ["atss"])).runs()[0]
    cfg = build_config(RunSpec.from_dict(run.to_dict()), parts / "work", coco_format_paths(run.dataset))
    train = dict(cfg.train_dataloader.dataset)
    assert train["type"] == "CocoFormatDataset" and cfg.test_dataloader.dataset["type"] == "CocoFormatDataset"
    train.update(pipeline=[])
    with_area = CocoDataset(**{k: v for k, v in train.items() if k != "type"})
    expected = [with_area.get_data_info(i)["instances"] for i in range(len(with_area))]
    drop_area(parts / "data" / "train.json", every=1)
    without = DATASETS.build(train)
    got = [without.get_data_info(i)["instances"] for i in range(len(without))]
    assert got == expected and sum(map(len, got)) > 0
    with pytest.raises(KeyError, match="area"):  # what it replaces: mmdet's own dataset fails on the file
        CocoDataset(**{k: v for k, v in train.items() if k != "type"})


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("name"), "needs a name"),
    (lambda d: d.update(name="coco"), "is a dataset kind's name"),
    (lambda d: d.update(root="/data"), "root does not apply to coco_format"),
    (lambda d: d.update(val={"ann": "data/val.json"}), "val must be {ann: FILE.json, images: FOLDER}"),
])
def test_a_malformed_dataset_entry_is_a_spec_error(parts, change, message):
    raw = spec("parts", relative(parts), ["atss"])
    change(raw["dataset"])
    path = parts / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(SpecError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_spec(path)


def test_boxes_only_data_refuses_a_named_mask_detector_and_leaves_them_out_under_all(tmp_path):
    write_dataset(tmp_path / "data", masks=False)
    named = write_spec(tmp_path, "named", ["atss", "mask_rcnn"])
    proc = harness("run", str(named), "--dry-run", "--results", str(tmp_path / "results"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "mask_rcnn needs a mask on every annotation" in lines[0]
    every = write_spec(tmp_path, "every", "all")
    proc = harness("run", str(every), "--dry-run", "--results", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    assert "mask_rcnn, yolact, solov2 left out of it" in proc.stdout
    assert "every: 4 runs" in proc.stdout  # the four box detectors with RS
    assert [r.detector for r in load_spec(every).runs()] == ["faster_rcnn", "cascade_rcnn", "atss", "paa"]


# ------------------------------------------------------------------------------------------------ checks


def _ann(folder: Path, split: str = "train") -> dict:
    return json.loads((folder / "data" / f"{split}.json").read_text())


def _put(folder: Path, data, split: str = "train") -> None:
    (folder / "data" / f"{split}.json").write_text(data if isinstance(data, str) else json.dumps(data))


def _break_box(size: bool):
    def change(folder):
        d = _ann(folder)
        d["annotations"][0]["bbox"] = [10, 10, 0, 5] if size else [80, 60, 30, 30]
        _put(folder, d)
    return change


def _unknown_category(folder):
    d = _ann(folder)
    d["annotations"][1]["category_id"] = 99
    _put(folder, d)


def _val_categories(folder):
    d = _ann(folder, "val")
    d["categories"] = copy.deepcopy(d["categories"])[:2] + [{"id": 12, "name": "hex nut M5"}]
    _put(folder, d, "val")


def _ids_not_integers(folder):
    """An exporter's text id ("7" for 7, which was reported as an unknown category 7) and an id that is not
    even hashable (a list: a traceback)."""
    d = _ann(folder)
    d["annotations"][1]["category_id"] = "7"
    d["annotations"][2]["image_id"] = [2]
    _put(folder, d)


def _resized_image(folder):
    from PIL import Image

    path = folder / "data" / "images" / "train_0003.png"
    Image.open(path).resize((192, 144)).save(path)


def _not_an_image(folder):
    (folder / "data" / "images" / "train_0002.png").write_bytes(b"<html>404</html>")


def _encoded(encoding: str):
    """The train file as Windows tools and some exporters save it: json reads it, pycocotools and mmdet do not."""
    def change(folder):
        path = folder / "data" / "train.json"
        path.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    return change


def _val_only_class(folder):
    """Same categories in both files, but no training object of 'hex nut' (12): val has some."""
    d = _ann(folder)
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 12 or a.get("iscrowd")]
    _put(folder, d)


def _class_all_left_out(folder):
    """'hex nut' (12) has training objects, but mmdet's dataset drops every one of them (area 0)."""
    d = _ann(folder)
    for a in d["annotations"]:
        if a["category_id"] == 12 and not a.get("iscrowd"):
            a["area"] = 0
    assert any(a["category_id"] == 12 and not a.get("iscrowd") for a in d["annotations"])
    _put(folder, d)


def _crowd_value(folder):
    d = _ann(folder)
    d["annotations"][0]["iscrowd"] = 2
    d["annotations"][3]["iscrowd"] = True
    _put(folder, d)


def _no_annotations(folder):
    d = _ann(folder)
    d["annotations"] = []
    _put(folder, d)


def _missing_key(folder):
    d = _ann(folder)
    del d["images"][2]["height"]
    _put(folder, d)


def _no_list(folder):
    d = _ann(folder)
    del d["categories"]
    _put(folder, d)


def _absent_images(folder):
    for name in ("train_0002.png", "train_0003.png", "train_0004.png", "train_0005.png"):
        (folder / "data" / "images" / name).unlink()


def _missing_ann(folder):
    (folder / "data" / "val.json").unlink()


def _missing_folder(folder):
    raw = yaml.safe_load((folder / "parts.yaml").read_text())
    raw["dataset"]["train"]["images"] = "data/imgs"
    (folder / "parts.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))


@pytest.mark.parametrize("change, expected", [
    (_missing_ann, ["val.ann: annotation file", "val.json does not exist", "fix the path"]),
    (_missing_folder, ["train.images: image folder", "data/imgs does not exist", "fix the path"]),
    (lambda f: _put(f, '{"images": [,]}'), ["train.json: not valid JSON", "line 1", "fix the file"]),
    (_no_list, ["train.json: no 'categories' list", "export it in COCO format"]),
    (_missing_key, ["train.json: 1 of 16 images lack COCO keys", "images[2] has no height", "needs id, file_name"]),
    (_absent_images, ["train.json: 4 of 16 images listed are not in", "train_0002.png, train_0003.png, "
                      "train_0004.png, ...", "copy them there"]),
    (_break_box(True), ["train.json: 1 boxes of non-positive size", "annotation 1000 [10, 10, 0, 5]",
                        "width and height > 0"]),
    (_break_box(False), ["train.json: 1 boxes outside their image", "[80, 60, 30, 30] in train_0001.png (96×72)",
                         "fix the boxes"]),
    (_unknown_category, ["train.json: 1 annotations of unknown categories (category_id 99",
                         "add those categories or remove"]),
    (_val_categories, ["val.json: val categories differ from train's", "only in val: 12 'hex nut M5'",
                       "only in train: 12 'hex nut'", "same categories list"]),
    (_no_annotations, ["train.json: no annotation at all", "needs annotated objects"]),
    (_ids_not_integers, ["train.json: 2 annotations have an id / image_id / category_id that is not an integer",
                         '(annotation ids 2000, 2001; values "7", [2])', 'COCO ids are integers: write 9, not "9"']),
    (_resized_image, ["train.json: 1 of 16 images in", "differ in size from the file's width and height (first: "
                      "train_0003.png is 192×144, the file says 96×72)", "boxes and masks are in the file's pixels"]),
    (_not_an_image, ["train.json: 1 of 16 images in", "are not readable images (first: train_0002.png "
                     "(UnidentifiedImageError))", "replace them"]),
    (_encoded("utf-8-sig"), ["train.json: starts with a UTF-8 byte-order mark, which pycocotools and mmdet cannot read",
                             "save it as UTF-8 without a byte-order mark", "encoding='utf-8-sig'"]),
    (_encoded("utf-16"), ["train.json: is UTF-16 text (with a byte-order mark), which pycocotools and mmdet cannot read",
                          "encoding='utf-16'"]),
    (_val_only_class, ["val.json: 1 classes have objects in val but none in train that training keeps (12 'hex nut': ",
                       "add training objects of it to", "or remove the class and its annotations from both files"]),
    (_class_all_left_out, ["val.json: 1 classes have objects in val but none in train that training keeps (12 "
                           "'hex nut': ", " in train all left out by mmdet (zero area,",
                           "fix the ones mmdet leaves out: harness data inspect lists them"]),
    (_crowd_value, ["train.json: 2 annotations have an 'iscrowd' other than 0 or 1 (ids 1000, 3000; values 2, true)",
                    "write 1 for a crowd region, 0 (or leave the key out) for an object"]),
])
def test_each_malformed_input_is_refused_with_one_line_before_training(parts, change, expected):
    path = write_spec(parts, "parts", ["atss"])
    change(parts)
    results = parts / "results"
    proc = harness("run", str(path), "--executor", "local", "--wait", "--results", str(results))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (results / "parts").exists()  # nothing trained, nothing written


def test_several_problems_are_one_line_each(parts):
    path = write_spec(parts, "parts", ["atss"])
    _absent_images(parts)
    _unknown_category(parts)
    proc = harness("run", str(path), "--dry-run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("harness run: error: ") for line in lines)


# ------------------------------------------------------------------------------------------------ inspect


def test_inspect_a_spec_and_an_annotation_file(parts):
    path = write_spec(parts, "parts", ["atss"])
    proc = harness("data", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "test-parts train:" in out and "test-parts val:" in out
    train = _ann(parts)
    objects = [a for a in train["annotations"] if not a["iscrowd"]]
    assert f"images: 16 (0 without objects; 1 distinct size(s), e.g. 96×72)" in out
    counts = sorted(sum(1 for a in objects if a["category_id"] == c["id"]) for c in CATEGORIES)
    assert f"instances: {len(objects)}; per class min {counts[0]} / median {counts[1]} / max {counts[2]}" in out
    assert "rarest classes: " in out and "crowd regions: 1" in out
    assert "masks: every annotation has one" in out and "no problems" in out
    proc = harness("data", "inspect", str(parts / "data" / "train.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)["inspected"][0]["summary"]
    assert info["box_sizes"]["small"] == len(objects) and info["crowd_regions"] == 1
    assert info["masks"]["state"] == "all" and info["classes"] == 3


def test_inspect_reports_the_problems_and_exits_2(parts):
    _break_box(True)(parts)
    proc = harness("data", "inspect", str(parts / "data" / "train.json"))
    assert proc.returncode == 2
    assert "instances:" in proc.stdout  # the summary still prints
    assert "boxes of non-positive size" in proc.stderr


def test_inspect_refuses_an_iscrowd_other_than_0_or_1(parts):
    """COCO's iscrowd is 0 or 1; mmdet and the evaluation would quietly take 2 for a crowd region (ignored)."""
    _crowd_value(parts)
    proc = harness("data", "inspect", str(write_spec(parts, "parts", ["atss"])))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.json: 2 annotations have an 'iscrowd' other than 0 or 1" in lines[0], lines


def test_inspect_counts_the_instances_mmdet_leaves_out_of_training(parts):
    """Valid COCO that mmdet's CocoDataset skips unsaid (area 0, a side under 1 px, no overlap with the image):
    not refused, but counted per split and reason by inspect, as many as the run's dataset drops. An
    annotation without area takes its box's: not zero area."""
    from mmengine.registry import init_default_scope

    from harness.data.coco_format import coco_format_paths
    from harness.detectors import plugin  # noqa: F401  (registers CocoFormatDataset)
    from harness.experiments.spec import RunSpec
    from harness.run.train import build_config
    from mmdet.registry import DATASETS

    d = _ann(parts)
    objects = [a for a in d["annotations"] if not a["iscrowd"]]
    objects[0]["area"] = 0
    objects[1]["area"] = 0.0
    objects[2]["bbox"][3] = 0.5  # 0.5 px high
    objects[3]["bbox"] = [-1.0, 10, 1.0, 5]  # touches the left border from outside (within the checks' 1 px)
    objects[4]["ignore"] = 1
    del objects[5]["area"]
    _put(parts, d)
    path = write_spec(parts, "parts", ["atss"])
    proc = harness("data", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr  # valid COCO: not refused
    train, val = proc.stdout.split("test-parts val:")
    assert (f"left out of training: 5 of {len(objects)} instances ('ignore': true 1, outside the image 1, zero area "
            "2, a side under 1 px 1): valid COCO, but mmdet's dataset skips them") in train
    assert "left out of training: none (mmdet skips instances of zero area" in val
    report = json.loads(harness("data", "inspect", str(path), "--json").stdout)
    counts = [i["summary"]["left_out_of_training"] for i in report["inspected"]]
    assert counts[0] == {"total": 5, "of": len(objects), "ignore_flag": 1, "outside_image": 1, "zero_area": 2,
                         "side_under_1px": 1}
    assert counts[1]["total"] == 0

    init_default_scope("mmdet")  # the run's own dataset drops exactly as many
    run = load_spec(path).runs()[0]
    cfg = build_config(RunSpec.from_dict(run.to_dict()), parts / "work", coco_format_paths(run.dataset))
    ds = DATASETS.build({**cfg.train_dataloader.dataset, "pipeline": [], "indices": None})  # every image
    trained = sum(1 for k in range(len(ds)) for i in ds.get_data_info(k)["instances"] if not i["ignore_flag"])
    assert trained == len(objects) - 5


def test_inspect_a_spec_says_how_many_classes_the_runs_train(tmp_path):
    """`cells --changes` shows COCO's 80 classes only: inspect SPEC is where a user sees the count every head
    is built for (the train file's categories, as coco_format_paths gives the run), as the docs say."""
    from harness.data.coco_format import coco_format_paths
    from harness.detectors import build_cell_config

    data = write_dataset(tmp_path / "data", train_images=2, val_images=2)
    for split in ("train", "val"):
        d = json.loads(data[split].read_text())
        d["categories"] = CATEGORIES + [{"id": 100 + k, "name": f"class {k}"} for k in range(4)]
        data[split].write_text(json.dumps(d))
    path = write_spec(tmp_path, "parts", ["atss"])
    proc = harness("data", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    line = ("test-parts: the runs train 7 classes (the train file's categories in file order: washer Ø8, Schraube "
            "(M4), hex nut, class 0, class 1, ...); every detector's head is built for 7 classes (num_classes)")
    assert line in proc.stdout.splitlines()
    report = json.loads(harness("data", "inspect", str(path), "--json").stdout)
    assert report["trained_classes"] == [{"dataset": "test-parts", "num_classes": 7,
                                          "classes": [c["name"] for c in CATEGORIES] + [f"class {k}" for k in range(4)]}]
    paths = coco_format_paths(load_spec(path).runs()[0].dataset)  # what the runs are built with
    assert paths.num_classes == 7
    assert build_cell_config("atss", "rs", classes=paths.classes, num_classes=7).model.bbox_head.num_classes == 7
    alone = harness("data", "inspect", str(data["train"]))  # a lone file is not what runs train on
    assert "the runs train" not in alone.stdout
    docs = " ".join((REPO / "docs" / "data-evaluation.md").read_text().split())
    assert "listed by `harness cells --changes`" not in docs
    assert ("`harness data inspect SPEC` prints, per dataset, the count the runs train with (`my-parts: the runs "
            "train") in docs


def test_the_example_spec_points_at_what_its_documented_command_writes(tmp_path):
    """experiments/example_coco_format.yaml reads data/example-parts as `harness data synthetic --out` lays it
    out; written here (small) and given to the checks with the example's relative paths."""
    from harness.data.coco_format import check_dataset

    example = load_spec(REPO / "experiments" / "example_coco_format.yaml")
    entry = example.datasets[0]
    assert entry["name"] == "example-parts"
    out = tmp_path / "example-parts"
    proc = harness("data", "synthetic", "--out", str(out), "--train-images", "6", "--val-images", "4")
    assert proc.returncode == 0, proc.stderr
    base = REPO / "data" / "example-parts"
    moved = {s: {k: str(out / Path(entry[s][k]).relative_to(base)) for k in ("ann", "images")} for s in ("train", "val")}
    assert check_dataset({**entry, **moved}) == []


def test_per_class_ap_comes_from_the_same_evaluation(parts):
    """Each category's AP: 1 for a class detected perfectly, 0 for one not detected at all; the summary AP
    is their mean (every class has val ground truth here)."""
    from harness.evaluation import evaluate, gt_to_detections

    val = parts / "data" / "val.json"
    dets = [d for d in gt_to_detections(str(val), with_masks=False) if d["category_id"] != 7]
    per_class: dict = {}
    metrics = evaluate(str(val), dets, iou_types=("bbox",), per_class=per_class)
    by_id = {c["id"]: c for c in per_class["bbox"]}
    assert by_id[7]["AP"] == 0 and by_id[40]["AP"] == pytest.approx(1) and by_id[12]["AP"] == pytest.approx(1)
    assert by_id[40]["name"] == "washer Ø8"
    assert metrics["bbox_AP"] == pytest.approx(sum(c["AP"] for c in per_class["bbox"]) / 3)


def test_image_sizes_are_read_as_mmdet_decodes_them(tmp_path):
    """A JPEG turned a quarter by its EXIF orientation is decoded turned (OpenCV applies it, mmdet's
    loader does too): the file's width and height must be the turned ones."""
    import numpy as np
    from PIL import Image

    from harness.data.coco_format import check_images

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 100, 3), np.uint8)).save(tmp_path / "a.jpg", exif=exif)  # stored 100 × 40
    for width, height, ok in ((40, 100, True), (100, 40, False)):
        data = {"images": [{"id": 1, "file_name": "a.jpg", "width": width, "height": height}]}
        ann = tmp_path / f"{width}x{height}.json"
        ann.write_text(json.dumps(data))
        found = check_images(data, ann, tmp_path)
        assert (found == []) == ok, found
        assert ok or "a.jpg is 40×100, the file says 100×40" in found[0]


@pytest.mark.parametrize("n", [1, 1500])
def test_one_class_or_thousands_with_any_ids(tmp_path, n):
    """Classes are the file's categories, however many and whatever their ids; every head gets that count
    at the paper profile too."""
    from harness.data.coco_format import check_dataset, coco_format_paths
    from harness.detectors import build_cell_config

    data = write_dataset(tmp_path / "data", train_images=2, val_images=2)
    for split in ("train", "val"):
        d = json.loads(data[split].read_text())
        d["categories"] = [{"id": 1000 + 3 * k, "name": f"class {k}"} for k in range(n)]
        for a in d["annotations"]:
            a["category_id"] = 1000
        data[split].write_text(json.dumps(d))
    entry = {"kind": "coco_format", "name": "many", **{s: {"ann": str(data[s]), "images": str(data["images"])}
                                                       for s in ("train", "val")}}
    assert check_dataset(entry) == []
    paths = coco_format_paths(entry)
    assert paths.num_classes == n and paths.category_ids[-1] == 1000 + 3 * (n - 1)
    cfg = build_cell_config("atss", "rs", classes=paths.classes, num_classes=n, profile="paper")
    assert cfg.model.bbox_head.num_classes == n


def test_doctor_reports_each_data_problem(parts, capsys):
    from harness.commands.doctor import check_data

    _absent_images(parts)
    findings = check_data(load_spec(write_spec(parts, "parts", ["atss"])))
    assert [f.status for f in findings] == ["problem"] and "4 of 16 images listed" in findings[0].text


def test_val_images_that_train_also_lists_are_warned_not_refused(parts):
    """Scoring each loss on images it trained on is allowed (a memorisation check) but said, on stderr by the
    dry run and by `data inspect` (its JSON too): the same file for both splits, or splits that overlap."""
    path = write_spec(parts, "parts", ["atss"])
    proc = harness("run", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # the test dataset's splits are apart

    val = _ann(parts, "val")
    train = _ann(parts)
    val["images"] += copy.deepcopy(train["images"][:2])  # two training images evaluated too
    _put(parts, val, "val")
    proc = harness("run", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    expected = (f"warning: test-parts: 2 of {len(val['images'])} val images are also train images (e.g. "
                f"{train['images'][0]['file_name']}, {train['images'][1]['file_name']}): the tables would score "
                "every loss on images it trained on")
    assert expected in proc.stderr, proc.stderr

    raw = yaml.safe_load(path.read_text())
    raw["dataset"]["val"]["ann"] = raw["dataset"]["train"]["ann"]
    path.write_text(yaml.safe_dump(raw))
    proc = harness("run", str(path), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "warning: test-parts: train and val are the same annotation file" in proc.stderr, proc.stderr
    proc = harness("data", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "warning: test-parts: train and val are the same annotation file" in proc.stdout
    report = json.loads(harness("data", "inspect", str(path), "--json").stdout)
    assert len(report["warnings"]) == 1 and "same annotation file" in report["warnings"][0]
    proc = harness("doctor", str(path))
    assert "test-parts: train and val are the same annotation file" in proc.stdout, proc.stdout


def test_the_data_of_many_cells_is_checked_once_a_process_until_it_changes(parts, monkeypatch):
    """A check reads both annotation files and every image's header; the launch (check_own_data), the plan's
    fingerprints and `harness status` (every done run's current fingerprint, cell by cell) all ask for it, so
    a process checks an unchanged dataset once, its warning kept with it (and the fingerprint's data stamp
    only stats the files). A changed file is checked again."""
    from harness.data import coco_format
    from harness.launch.orchestrate import check_own_data
    from harness.run import fingerprint

    calls = []
    real = coco_format._check_dataset
    monkeypatch.setattr(coco_format, "_check_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(coco_format, "_PASSED", {})
    monkeypatch.setattr(fingerprint, "_CONFIGS", {})
    path = write_spec(parts, "parts", ["atss", "paa"], losses=("focal", "rs"))
    raw = yaml.safe_load(path.read_text())
    raw["dataset"]["val"]["ann"] = raw["dataset"]["train"]["ann"]  # a dataset with a warning
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    runs = spec.runs()
    assert len({(r.detector, r.loss) for r in runs}) == 4
    check_own_data(spec)
    for run in runs:
        assert fingerprint.current(run)["components"]["config"]  # every cell's config was built
    assert len(calls) == 1
    warnings = []
    assert coco_format.check_dataset(runs[0].dataset, None, warnings) == [] and len(calls) == 1
    assert len(warnings) == 1 and "same annotation file" in warnings[0]  # the kept pass keeps its warning
    ann = Path(runs[0].dataset["val"]["ann"])
    ann.write_text(ann.read_text() + "\n")  # the same data, but a changed file: checked again
    coco_format.coco_format_paths(runs[0].dataset)
    assert len(calls) == 2
