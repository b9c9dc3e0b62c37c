"""`harness evaluate` and `harness data`: JSON out, one-line errors with exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.cli import main
from harness.data import SyntheticParams, generate_synthetic
from harness.evaluation import gt_to_detections

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-eval")
    paths = generate_synthetic(SyntheticParams.default("coco", train_images=4, val_images=6), base / "data")
    dets = gt_to_detections(paths.val_ann)
    good = base / "dets.json"
    good.write_text(json.dumps(dets))
    return {"gt": str(paths.val_ann), "dets": str(good), "list": dets, "base": base}


def test_prints_metrics_as_json(files, capsys, tmp_path):
    out = tmp_path / "m" / "metrics.json"
    assert main(["evaluate", "--gt", files["gt"], "--dets", files["dets"], "--out", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["bbox_AP"] == pytest.approx(1.0, abs=1e-12) and metrics["segm_oLRP"] == 0.0
    assert metrics["bbox_APl"] is None  # nothing large in 128-pixel images: undefined → null
    assert json.loads(out.read_text()) == metrics
    assert main(["evaluate", "--gt", files["gt"], "--dets", files["dets"], "--iou-type", "segm"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {f"segm_{k}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "oLRP", "oLRP_loc", "oLRP_FP", "oLRP_FN")}


def test_empty_detections_give_zero_ap(files, capsys, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert main(["evaluate", "--gt", files["gt"], "--dets", str(empty), "--iou-type", "bbox", "--iou-type", "segm"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["bbox_AP"] == 0.0 and m["segm_AP"] == 0.0 and m["bbox_oLRP"] == 1.0


def _bad(files, tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_bad_inputs_one_line_exit_2(files, capsys, tmp_path):
    det = dict(files["list"][0])
    cases = [
        (["--dets", str(tmp_path / "missing.json")], "detections file {} does not exist".format(tmp_path / "missing.json")),
        (["--dets", _bad(files, tmp_path, "broken.json", "[{")], "is not valid JSON"),
        (["--dets", _bad(files, tmp_path, "obj.json", {"a": 1})], "must be a JSON list"),
        (["--dets", _bad(files, tmp_path, "img.json", [dict(det, image_id=424242)])], "detection 0: image_id 424242 is not in the ground truth"),
        (["--dets", _bad(files, tmp_path, "cat.json", [dict(det, category_id=77)])], "detection 0: category_id 77 is not in the ground truth"),
        (["--dets", _bad(files, tmp_path, "neg.json", [dict(det, bbox=[1, 2, 3, -4])])], "has negative height"),
        (["--dets", files["dets"], "--kind", "lvis"], "has no 'neg_category_ids' list"),
    ]
    for extra, message in cases:
        argv = ["evaluate", "--gt", files["gt"], "--dets", files["dets"]]
        argv[argv.index("--dets") : argv.index("--dets") + 2] = []
        out_file = tmp_path / "never.json"
        assert main(argv + extra + ["--out", str(out_file)]) == 2, message
        captured = capsys.readouterr()
        assert captured.out == "" and not out_file.exists()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("harness evaluate: error: ") and message in lines[0], captured.err


def test_no_traceback_from_the_shell(files, tmp_path):
    bad = _bad(files, tmp_path, "neg2.json", [dict(files["list"][0], bbox=[0, 0, -1, 1])])
    r = subprocess.run([sys.executable, "-m", "harness", "evaluate", "--gt", files["gt"], "--dets", bad], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_data_synthetic_command(tmp_path, capsys, monkeypatch):
    out = tmp_path / "syn"
    argv = ["data", "synthetic", "--kind", "coco", "--out", str(out), "--train-images", "3", "--val-images", "2", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_images"] == 3 and info["val_images"] == 2 and (out / "annotations" / "instances_val.json").is_file()
    assert main(argv[:-1]) == 0 and capsys.readouterr().out.startswith("up to date:")
    assert main(argv[:-1] + ["--seed", "4"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(argv[:-1] + ["--seed", "4", "--force"]) == 0 and capsys.readouterr().out.startswith("wrote:")
    assert json.loads((out / "params.json").read_text())["params"]["seed"] == 4
    assert main(["data", "synthetic", "--out", str(tmp_path / "x"), "--image-size", "8"]) == 2
    assert capsys.readouterr().err.startswith("harness data: error: image_size must be")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "cache"))
    assert main(["data", "synthetic", "--kind", "lvis", "--train-images", "5", "--val-images", "2"]) == 0
    assert f"{tmp_path}/cache/synthetic/lvis-" in capsys.readouterr().out


def test_data_check_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_LVIS_ROOT", raising=False)
    assert main(["data", "check", "lvis"]) == 2
    assert capsys.readouterr().err == "harness data: error: no LVIS v1 data root: give dataset.root in the spec (`harness data check`: --root) or set HARNESS_LVIS_ROOT (layout: docs/data-evaluation.md)\n"
    assert main(["data", "check", "coco", "--root", str(tmp_path)]) == 2
    assert f"expected {tmp_path}/annotations/instances_train2017.json" in capsys.readouterr().err


def test_out_that_is_an_input_empty_or_a_folder_is_refused_before_evaluating(files, capsys, tmp_path):
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(files["list"]))
    before = dets.read_text()
    for out, words in ((str(dets), "is one of the inputs"), ("", "--out needs a file name"),
                       (str(tmp_path), "is a folder")):
        assert main(["evaluate", "--gt", files["gt"], "--dets", str(dets), "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert dets.read_text() == before  # the detections are untouched


def test_check_cell_refuses_a_negative_seed(capsys):
    assert main(["check-cell", "atss", "rs", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed must be 0 or more" in err[0]
