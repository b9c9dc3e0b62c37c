"""A row knows what made it: the fingerprint a run records (config, harness code, loss modules, versions,
generator), what the current code builds for it, and `stale` in words; a mask detector's run with no
detection still has mask metrics."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from cli import harness
from harness.experiments.spec import parse_spec
from harness.run import fingerprint as fpm

REPO = Path(__file__).resolve().parents[1]


def tiny_spec(**over):
    raw = {"name": "fp", "dataset": {"kind": "synthetic", "train_images": 8, "val_images": 4}, "detectors": ["atss"],
           "losses": ["focal"], "seeds": [0, 1], "schedule": {"epochs": 1, "max_iters_per_epoch": 1, "batch_per_gpu": 2}}
    raw.update(over)
    return parse_spec(raw, name="fp", detectors=["atss", "solov2", "mask_rcnn", "yolact"],
                      losses_loader=lambda mods, origin="": ["focal", "rs"])


def test_the_current_fingerprint_is_one_per_cell_and_says_what_decides_it():
    a, b = tiny_spec().runs()
    fa, fb = fpm.current(a), fpm.current(b)
    assert fa == fb  # seeds share a config (the seed is in the run's id, not in its fingerprint)
    comp = fa["components"]
    assert set(comp) == {"config", "harness_version", "harness_tree", "harness_changes", "loss_modules", "versions",
                         "generator_version", "data_files"}
    assert comp["config"] and comp["harness_tree"] and comp["generator_version"] == 2
    assert set(comp["versions"]) == {"torch", "torchvision", "mmcv", "mmengine", "mmdet"}
    assert comp["versions"]["mmdet"] == "3.3.0" and fa["git_commit"] == fpm.LOADED["git_commit"]
    assert fpm.stale_reasons(fa, fpm.current(a)) == []
    (other,) = [r for r in tiny_spec(schedule={"epochs": 1, "max_iters_per_epoch": 1, "lr": 0.5}).runs() if r.seed == 0]
    assert fpm.stale_reasons(fa, fpm.current(other)) == ["config changed"]


def test_the_config_digest_leaves_out_what_is_local_to_one_run():
    from mmengine.config import Config

    from harness.run.train import config_digest

    base = {"work_dir": "/w/1", "launcher": "none", "resume": False, "randomness": {"seed": 0},
            "test_evaluator": {"outfile": "/w/1/p.json", "ann_file": "/data/x/val.json"}, "model": {"lr": 1}}
    other = copy.deepcopy(base)
    other.update(work_dir="/w/2", launcher="pytorch", resume=True, randomness={"seed": 7},
                 test_evaluator={"outfile": "/w/2/p.json", "ann_file": "/elsewhere/val.json"})
    assert config_digest(Config(base), "/data/x") == config_digest(Config(other), "/elsewhere")
    changed = copy.deepcopy(base)
    changed["model"]["lr"] = 2
    assert config_digest(Config(changed), "/data/x") != config_digest(Config(base), "/data/x")


@pytest.mark.parametrize("detector", ["atss", "mask_rcnn", "solov2"])
def test_a_run_built_in_its_job_and_the_one_status_builds_share_a_digest(tmp_path, detector):
    """The job records the digest of the config it trains (built in its work folder, with this process's
    set-up); status builds the same run elsewhere without it: equal digests, or every fresh run reads stale."""
    from harness.run.train import build_config, config_digest, run_data

    run = next(r for r in tiny_spec(detectors=[detector]).runs())
    paths = run_data(run)
    in_job = build_config(run, tmp_path / "work" / run.run_id, paths)
    in_status = build_config(run, Path("work"), paths, runtime=False)
    assert config_digest(in_job, paths.root) == config_digest(in_status, paths.root)


def test_stale_reasons_say_what_changed_in_words():
    (run, _) = tiny_spec().runs()
    now = fpm.current(run)
    old = copy.deepcopy(now)
    old["components"]["versions"]["mmdet"] = "3.2.0"
    old["components"]["harness_tree"] = "0" * 40
    old["git_commit"] = "a" * 40
    old["components"]["config"] = "0" * 16
    old["components"]["loss_modules"] = {"examples/quality_focal.py": "1" * 16}
    now_with_module = copy.deepcopy(now)
    now_with_module["components"]["loss_modules"] = {"examples/quality_focal.py": "2" * 16}
    reasons = fpm.stale_reasons(old, now_with_module)
    assert reasons == [f"harness code changed (commit aaaaaaaaaa -> {str(now['git_commit'])[:10]})",
                       "mmdet 3.2.0 -> 3.3.0", "loss module examples/quality_focal.py changed", "config changed"]
    same_commit = copy.deepcopy(now)
    same_commit["components"]["harness_changes"] = "f" * 16
    assert fpm.stale_reasons(same_commit, now) == ["harness code changed (uncommitted changes under harness/)"]
    assert fpm.stale_reasons(None, now) == ["no fingerprint recorded"]
    unbuilt = copy.deepcopy(now)
    unbuilt["components"]["config"], unbuilt["config_error"] = None, "FileNotFoundError: no data here"
    assert fpm.stale_reasons(now, unbuilt) == []  # a config that cannot be built here is not compared


def test_a_loss_module_is_fingerprinted_as_it_was_imported(tmp_path):
    from harness.experiments.spec import import_loss_modules

    module = tmp_path / "fp_probe_loss.py"
    module.write_text(Path(REPO / "examples" / "quality_focal.py").read_text().replace('name="qfl"', 'name="fp_probe"'))
    import_loss_modules([str(module)], "")  # registers fp_probe, which the spec's runs need
    raw = {"name": "fp", "dataset": {"kind": "synthetic", "train_images": 8, "val_images": 4}, "detectors": ["atss"],
           "losses": ["fp_probe", "focal"], "loss_modules": [str(module)],
           "schedule": {"epochs": 1, "max_iters_per_epoch": 1, "batch_per_gpu": 2}}
    run, baseline = parse_spec(raw, name="fp", detectors=["atss"],
                               losses_loader=lambda mods, origin="": ["focal", "fp_probe"]).runs()
    import_loss_modules(run.loss_modules, run.origin)
    assert fpm.recorded(baseline)["components"]["loss_modules"] == {}  # focal takes nothing from the module
    before = fpm.recorded(run)["components"]["loss_modules"][str(module)]
    module.write_text(module.read_text() + "\n# edited after the import\n")
    assert fpm.recorded(run)["components"]["loss_modules"][str(module)] == before  # what this process runs
    now = fpm.current(run)
    assert fpm.stale_reasons(fpm.recorded(run, now["components"]["config"]), now) == [f"loss module {module} changed"]
    assert fpm.stale_reasons(fpm.recorded(run), now)[-1] == "no config recorded (the run failed before building it)"


def test_a_mask_detector_without_detections_gets_mask_metrics():
    from harness.data.synthetic import ensure_synthetic
    from harness.run.hooks import HarnessMetric
    from harness.run.train import build_config, run_data

    for det in ("mask_rcnn", "yolact", "solov2"):
        run = tiny_spec(detectors=[det]).runs()[0]
        cfg = build_config(run, Path("work"), run_data(run), runtime=False)
        assert cfg.test_evaluator["iou_types"] == ["bbox", "segm"], det
    assert build_config(tiny_spec().runs()[0], Path("work"), run_data(tiny_spec().runs()[0]),
                        runtime=False).test_evaluator["iou_types"] == ["bbox"]
    paths = ensure_synthetic()
    metric = HarnessMetric(ann_file=str(paths.val_ann), kind="coco", iou_types=["bbox", "segm"])
    out = metric.compute_metrics([[] for _ in range(3)])  # no image had a detection
    assert out["segm_AP"] == 0 and out["segm_oLRP"] == 1 and out["bbox_AP"] == 0 and out["bbox_oLRP"] == 1


# ------------------------------------------------------------------------------------------------
# Through the command line: a real (one-iteration) run, then its loss module edited


@pytest.mark.slow
def test_editing_a_loss_module_makes_its_runs_stale_and_only_rerun_stale_redoes_them(tmp_path):
    module = tmp_path / "my_qfl.py"
    shutil.copy(REPO / "examples" / "quality_focal.py", module)
    spec = tmp_path / "fp.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "fp", "dataset": {"kind": "synthetic", "train_images": 8, "val_images": 4}, "profile": "tiny",
        "detectors": ["atss"], "losses": ["qfl", "focal"], "loss_modules": [str(module)],
        "schedule": {"epochs": 1, "max_iters_per_epoch": 1, "batch_per_gpu": 2},
        "launch": {"executor": "debug", "cpus_per_run": 1, "time_min": 20}}))
    results = tmp_path / "results"
    proc = harness("run", str(spec), "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row_file,) = (results / "fp" / "runs").glob("*qfl*.json")
    (baseline,) = (results / "fp" / "runs").glob("*focal*.json")
    assert json.loads(baseline.read_text())["fingerprint"]["components"]["loss_modules"] == {}
    row = json.loads(row_file.read_text())
    assert row["status"] == "done", row.get("reason")
    fp = row["fingerprint"]
    assert fp["components"]["config"] and fp["components"]["loss_modules"][str(module)]
    assert row["provenance"]["git_commit"] == fp["git_commit"]

    proc = harness("status", str(results / "fp"))
    assert proc.returncode == 0 and proc.stdout.startswith("done") and "2 done" in proc.stdout, proc.stdout

    module.write_text(module.read_text().replace("beta: float = 2.0", "beta: float = 1.5"))
    proc = harness("status", str(results / "fp"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # the run of the edited loss is stale; the baseline, which takes nothing from the module, is not
    assert any(line.startswith("stale") and " qfl " in line and f"(loss module {module} changed)" in line
               for line in lines), proc.stdout
    assert any(line.startswith("done") and " focal " in line for line in lines), proc.stdout
    assert "1 done, 1 stale" in proc.stdout

    proc = harness("run", str(spec), "--results", str(results), "--dry-run")
    assert "0 to run, 1 already done, 1 stale (left alone; --rerun-stale reruns them)" in proc.stdout, proc.stdout
    mtime = row_file.stat().st_mtime_ns
    proc = harness("run", str(spec), "--results", str(results))
    assert proc.returncode == 0 and row_file.stat().st_mtime_ns == mtime  # left alone

    proc = harness("run", str(spec), "--results", str(results), "--rerun-stale")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 to run (1 stale)" in proc.stdout
    new = json.loads(row_file.read_text())
    assert new["status"] == "done" and new["fingerprint"]["digest"] != fp["digest"]
    proc = harness("status", str(results / "fp"))
    assert proc.stdout.startswith("done") and "2 done" in proc.stdout, proc.stdout


def test_editing_your_own_annotation_files_makes_the_runs_on_them_stale(tmp_path):
    """The spec names a coco_format dataset by its paths only: the files' content is in the fingerprint,
    so a relabelled annotation file shows as stale (in words), an untouched one does not."""
    from coco_format_data import spec as data_spec, write_dataset
    from harness.experiments.spec import load_spec

    files = write_dataset(tmp_path / "data", masks=False, train_images=4, val_images=2)
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(data_spec("own", {"train": str(files["train"]), "val": str(files["val"]),
                                                     "images": str(files["images"])}, ["atss"])))
    run = load_spec(path).runs()[0]
    recorded = fpm.recorded(run, config="c" * 16)
    now = fpm.current(run)
    now["components"]["config"] = "c" * 16  # compare the data alone
    assert fpm.stale_reasons(recorded, now) == []
    data = json.loads(files["val"].read_text())
    data["annotations"][0]["bbox"][2] += 3  # one box relabelled
    files["val"].write_text(json.dumps(data))
    now = fpm.current(run)
    now["components"]["config"] = "c" * 16
    assert fpm.stale_reasons(recorded, now) == ["val annotation file changed"]
    files["train"].unlink()
    now = fpm.current(run)
    now["components"]["config"] = "c" * 16
    assert fpm.stale_reasons(recorded, now) == ["train annotation file not found", "val annotation file changed"]
    assert fpm.current(tiny_spec().runs()[0])["components"]["data_files"] is None  # generated data: its entry
