"""Experiment specs: validation with clear errors, expansion into runs, stable run ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.experiments.spec import SpecError, load_spec

DETECTORS = ["faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn", "yolact", "solov2"]
REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, data, name="exp"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(tmp_path, data):
    return load_spec(write(tmp_path, data), DETECTORS)


BASE = {"detectors": ["atss"], "losses": ["rs", "focal"]}


@pytest.mark.parametrize("name, cells, seeds", [("synthetic", 35, 3), ("synthetic_lvis", 10, 1), ("coco_1x", 35, 1),
                                                ("lvis_1x", 3, 1)])
def test_shipped_specs_validate_and_expand(name, cells, seeds):
    spec = load_spec(REPO / "experiments" / f"{name}.yaml", DETECTORS)
    runs = spec.runs()
    assert len({(r.detector, r.loss, str(r.dataset)) for r in runs}) == cells and len(spec.seeds) == seeds
    assert len(runs) == cells * seeds and len({r.run_id for r in runs}) == cells * seeds
    assert all(r.experiment == spec.name == name for r in runs)


def test_coco_grid_is_the_paper_grid():
    spec = load_spec(REPO / "experiments" / "coco_1x.yaml", DETECTORS)
    assert spec.profile == "paper" and set(spec.detectors) == set(DETECTORS)
    assert set(spec.losses) == {"ce", "focal", "ap", "alrp", "rs"}
    runs = {(r.detector, r.loss): r for r in spec.runs()}
    assert runs["atss", "rs"].launch["gpus_per_run"] * runs["atss", "rs"].schedule["batch_per_gpu"] == 16
    assert runs["solov2", "rs"].schedule["epochs"] == 36 and runs["atss", "rs"].schedule["epochs"] == 12


def test_synthetic_lvis_crosses_rfs_on_and_off():
    runs = load_spec(REPO / "experiments" / "synthetic_lvis.yaml", DETECTORS).runs()
    assert {r.dataset["repeat_factor"] for r in runs} == {0.001, None}


def test_run_ids_hash_the_resolved_config_and_seed(tmp_path):
    a = load(tmp_path, {**BASE, "seeds": [0, 1]}).runs()
    b = load(tmp_path, {**BASE, "seeds": [0, 1], "launch": {"cpus_per_run": 2}}).runs()
    c = load(tmp_path, {**BASE, "seeds": [0, 1], "schedule": {"epochs": 3}}).runs()
    assert [r.run_id for r in a] == [r.run_id for r in b]  # resources do not change a run
    assert not {r.run_id for r in a} & {r.run_id for r in c}  # the schedule does
    # the seed is hashed too: two runs of one cell that differ only in their seed differ in their hash, not
    # only in the readable "-s<seed>-" part of the id
    s0, s1 = sorted((r for r in a if r.loss == "rs"), key=lambda r: r.seed)
    assert {k for k in s0.identity if s0.identity[k] != s1.identity[k]} == {"seed"}
    assert s0.run_id.startswith("atss-rs-s0-") and s1.run_id.startswith("atss-rs-s1-")
    assert s0.run_id.rsplit("-", 1)[1] != s1.run_id.rsplit("-", 1)[1]


def test_processes_per_run_set_the_world_size_and_change_the_run(tmp_path):
    base = {**BASE, "schedule": {"accumulate": 1}}  # no accumulation: more processes, a larger total batch
    one = load(tmp_path, base).runs()
    cpu2 = load(tmp_path, {**base, "launch": {"tasks_per_run": 2, "cpus_per_run": 2}}).runs()
    gpu4 = load(tmp_path, {**base, "launch": {"gpus_per_run": 4}}).runs()
    gpu1 = load(tmp_path, {**base, "launch": {"gpus_per_run": 1}}).runs()
    assert [r.world_size for r in (one[0], cpu2[0], gpu4[0], gpu1[0])] == [1, 2, 4, 1]
    # the number of processes sets the total batch, so it is part of the run's identity
    assert one[0].run_id == gpu1[0].run_id != cpu2[0].run_id != gpu4[0].run_id
    assert cpu2[0].resources != one[0].resources


def test_overrides_apply_per_detector(tmp_path):
    spec = load(tmp_path, {"detectors": ["atss", "solov2"], "losses": ["rs"], "schedule": {"epochs": 2},
                           "overrides": {"solov2": {"schedule": {"epochs": 5}, "launch": {"time_min": 99}}}})
    runs = {r.detector: r for r in spec.runs()}
    assert runs["atss"].schedule["epochs"] == 2 and runs["solov2"].schedule["epochs"] == 5
    assert runs["solov2"].launch["time_min"] == 99 and runs["atss"].resources != runs["solov2"].resources


@pytest.mark.parametrize(
    "change, message",
    [
        ({"detectors": ["atts"]}, "unknown name 'atts' (did you mean 'atss'?); valid: faster_rcnn, cascade_rcnn"),
        ({"losses": ["rank_sort"]}, "unknown name 'rank_sort'"),
        ({"lossses": ["rs"]}, "unknown key 'lossses' (did you mean 'losses'?)"),
        ({"profile": "huge"}, "profile: 'huge' is not one of tiny, paper"),
        ({"seeds": [0, -1]}, "seeds[1] must be an integer >= 0"),
        ({"seeds": [1, 1]}, "seeds repeat"),
        ({"schedule": {"epochs": 0}}, "schedule.epochs must be an integer >= 1, got 0"),
        ({"schedule": {"lr": "fast"}}, "schedule.lr must be a number > 0"),
        ({"schedule": {"epoch": 2}}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"launch": {"executor": "ssh"}}, "executor: 'ssh' is not one of auto, slurm, local, debug"),
        ({"launch": {"gpus_per_run": -1}}, "gpus_per_run must be an integer >= 0"),
        ({"launch": {"tasks_per_run": 0}}, "tasks_per_run must be an integer >= 1, got 0"),
        ({"launch": {"gpus_per_run": 4, "tasks_per_run": 2}}, "a GPU run has one task per GPU"),
        ({"launch": {"tasks_per_run": 2}}, "tasks_per_run 2 on CPU needs cpus_per_run >= 2"),
        ({"overrides": {"atss": {"launch": {"tasks_per_run": 3}}}}, "overrides.atss.launch: tasks_per_run 3 on CPU"),
        ({"dataset": {"kind": "imagenet"}}, "kind: 'imagenet' is not one of synthetic, synthetic_lvis, coco, lvis"),
        ({"dataset": {"kind": "coco", "repeat_factor": 0.001}}, "repeat_factor applies to lvis"),
        ({"dataset": {"kind": "synthetic", "root": "/data/coco"}}, "dataset.root applies to coco and lvis data only: "
                                                                   "synthetic data is generated"),
        ({"overrides": {"retinanet": {}}}, "overrides: unknown detector 'retinanet'"),
        ({"overrides": {"atss": {"lr": 1}}}, "overrides.atss: unknown key 'lr'"),
        ({"loss_modules": ["no_such_module_xyz"]}, "cannot be imported"),
        ({"name": "has space"}, "name must be letters"),
    ],
)
def test_bad_specs_name_the_problem_and_the_choices(tmp_path, change, message):
    with pytest.raises(SpecError) as info:
        load(tmp_path, {**BASE, **change})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml", DETECTORS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("detectors: [atss\nlosses: rs\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad, DETECTORS)
    with pytest.raises(SpecError, match="missing key 'losses'"):
        load(tmp_path, {"detectors": "all"})
