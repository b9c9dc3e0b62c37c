"""Bad input to `harness data`: one line on stderr saying what is wrong and how to fix it, exit 2, nothing
written; and what `harness data inspect` says it checked."""

from __future__ import annotations

import pytest

from cli import harness
from harness.cli import main


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-1", "seed must be 0 or more (a non-negative integer), got -1"),
    ("--train-images", "0", "train_images and val_images must be at least 1"),
])
def test_synthetic_bad_value_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, flag, value, message):
    out = tmp_path / "syn"
    proc = harness("data", "synthetic", "--out", str(out), flag, value)
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr == f"harness data: error: {message}\n"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "cache"))  # the cache, without --out: refused alike
    assert main(["data", "synthetic", flag, value]) == 2
    assert capsys.readouterr().err == f"harness data: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_inspect_of_one_annotation_file_says_its_images_were_not_checked(tmp_path):
    """A lone file names no image folder: its images (and val against train) go unchecked, and the output
    must say so rather than claim the checks before training pass; the same file through a spec is refused."""
    import json

    import yaml

    from coco_format_data import spec, write_dataset

    data = write_dataset(tmp_path / "data", train_images=4, val_images=2)
    listed = json.loads(data["train"].read_text())["images"][0]["file_name"]
    (data["images"] / listed).unlink()
    proc = harness("data", "inspect", "train.json", cwd=data["train"].parent)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "annotation file: train.json"
    assert any(line.startswith("not checked: whether the images it lists are on disk") and "harness data inspect SPEC"
               in line for line in lines)
    assert "the checks before training pass" not in proc.stdout
    assert lines[-1].startswith("no problems in the file itself (its images were not checked")
    proc = harness("data", "inspect", str(data["train"]), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["inspected"][0]["dataset"] is None and report["inspected"][0]["images_checked"] is False
    assert report["not_checked"].startswith("whether the images it lists are on disk")

    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump(spec("parts", data, ["atss"]), allow_unicode=True))
    proc = harness("data", "inspect", str(path))
    assert proc.returncode == 2 and "1 of 4 images listed are not in" in proc.stderr
    assert "not checked" not in proc.stdout and "test-parts train: " in proc.stdout
    report = json.loads(harness("data", "inspect", str(path), "--json").stdout)
    assert report["not_checked"] is None and all(i["images_checked"] for i in report["inspected"])
