"""`harness gpu-check` on CPU in its quick mode: the code path of the GPU check (cells trained and predicted
with compiled mmcv kernels forbidden, step timings, the report), its failure reporting and usage errors.
The real check needs a GPU (see README, "On a cluster")."""

from __future__ import annotations

import importlib
import math

import pytest

from harness import gpu_check
from harness.cli import main
from harness.detectors import kernels

CELLS = ["faster_rcnn:rs", "mask_rcnn:ce", "solov2:focal"]


def _only(cells):
    return [a for cell in cells for a in ("--only", cell)]


def test_quick_check_trains_predicts_times_and_reports(tmp_path, capsys):
    out = tmp_path / "gpu"
    code = main(["gpu-check", "--device", "cpu", "--quick", "--out", str(out), *_only(CELLS)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "3 of 3 cells train and predict; 3 of 3 detectors timed" in printed
    report = (tmp_path / "gpu.md").read_text()
    assert "## Cells: 3 of 3 train and predict" in report
    for title, loss in (("Faster R-CNN", "rs"), ("Mask R-CNN", "ce"), ("SOLOv2", "focal")):
        assert f"| {title} | {loss} | ok |" in report
    # the step-time table: each detector's baseline beside RS, with the published figures
    assert "| Faster R-CNN | ce |" in report and "| 0.58 | 0.19 |" in report
    assert "| Mask R-CNN | ce |" in report and "| 0.68 | 0.29 |" in report
    assert "| SOLOv2 | focal |" in report and "n/a (quick)" in report
    assert "torch " in report and "compiled kernels forbidden" in report


@pytest.mark.parametrize("detector", ["faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn", "yolact", "solov2"])
def test_the_full_check_times_each_detector_at_its_paper_configs_input_size(detector):
    """The step times are compared with the published ones: each detector must be timed on images of the
    size its paper-profile config trains at (mmdet's ``Resize`` scale is width x height)."""
    cfg = gpu_check.cell_config(detector, "rs", "paper")
    (resize,) = [step for step in cfg.train_pipeline if step["type"] in ("Resize", "RandomChoiceResize")]
    scales = resize.get("scales") or [resize["scale"]]  # SOLOv2-light trains at one of several
    height, width = gpu_check.INPUT_SIZE.get(detector, gpu_check.FULL.paper_size)
    assert gpu_check.FULL.profile == "paper" and gpu_check.FULL.apply_target
    assert (width, height) in scales


def test_settings_overrides_apply_and_none_keeps_the_default():
    assert gpu_check.settings_for(True, iterations=3) == gpu_check.replace(gpu_check.QUICK, iterations=3)
    assert gpu_check.settings_for(False, iterations=None) == gpu_check.FULL


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_training_steps_follow_the_recipes_warmup_and_scaled_lr():
    import torch

    cfg = gpu_check.cell_config("atss", "rs", "tiny")
    trainer = gpu_check.Trainer(cfg, torch.device("cpu"), batch=2)
    recipe_lr = cfg.optim_wrapper.optimizer.lr * 2 / cfg.recipe["total_batch"]
    assert trainer.base_lrs[0] == pytest.approx(recipe_lr)
    start, end = trainer.warmup
    assert (start, end) == (cfg.param_scheduler[0]["start_factor"], cfg.param_scheduler[0]["end"])
    trainer.iteration = end // 2
    trainer._set_lr()
    assert trainer.wrapper.optimizer.param_groups[0]["lr"] == pytest.approx(recipe_lr * (start + (1 - start) / 2))


def test_no_imagenet_download_at_the_paper_profile():
    cfg = gpu_check.cell_config("faster_rcnn", "ce", "paper")
    assert cfg.model.backbone.get("init_cfg") is None
    assert cfg.model.backbone.depth == 50 and "FPN" in cfg.model.neck.type


def test_a_failing_cell_is_listed_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    real = gpu_check.Trainer.values

    def values(log_vars):
        out = real(log_vars)
        if "loss_mask" in out:  # Mask R-CNN's: a diverging cell
            out["loss_mask"] = math.nan
        return out

    monkeypatch.setattr(gpu_check.Trainer, "values", staticmethod(values))
    out = tmp_path / "gpu"
    code = main(["gpu-check", "--device", "cpu", "--quick", "--iterations", "1", "--out", str(out),
                 *_only(["atss:rs", "mask_rcnn:rs"])])
    printed = capsys.readouterr().out
    assert code == 1
    assert "1 of 2 cells train and predict" in printed
    report = (tmp_path / "gpu.md").read_text()
    assert "| ATSS | rs | ok |" in report
    assert "| Mask R-CNN | rs | FAILED: step 1: loss_mask = nan |" in report


def test_a_compiled_kernel_on_the_path_fails_the_cell(tmp_path, capsys, monkeypatch):
    """Without the routing, the R-CNN's NMS reaches mmcv._ext: the check names the kernel."""
    for name in kernels.ROUTED:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "ext_module", module.ext_module._ext)
    code = main(["gpu-check", "--device", "cpu", "--quick", "--iterations", "1", "--out", str(tmp_path / "gpu"),
                 *_only(["faster_rcnn:ce"])])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILED: CompiledOpCalled: mmcv._ext.nms was called" in printed


def test_usage_errors(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check"]) == 2
    assert "torch sees no GPU here" in capsys.readouterr().err
    assert main(["gpu-check", "--device", "cpu"]) == 2
    assert "add --quick" in capsys.readouterr().err
    assert main(["gpu-check", "--device", "cuda", "--quick"]) == 2
    assert "cannot use a GPU here" in capsys.readouterr().err
    assert main(["gpu-check", "--device", "cpu", "--quick", "--only", "atss"]) == 2
    assert "expected DETECTOR:LOSS" in capsys.readouterr().err
    assert main(["gpu-check", "--device", "cpu", "--quick", "--only", "atss:nope"]) == 2
    assert "unknown loss" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- scripts

def _script(name: str, env: dict, *args: str):
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["bash", str(root / "scripts" / name), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_scripts_refuse_bad_settings_in_one_line(tmp_path):
    """The set-up and GPU scripts stop before doing anything, with one line saying what to change."""
    cases = [
        ("setup.sh", {"HARNESS_TORCH_VARIANT": "cuda12"}, "is not a PyTorch build variant"),
        ("setup.sh", {"HARNESS_TORCH_VARIANT": "cu126", "HARNESS_TORCH_INDEX_URL": "https://x"}, "not both"),
        ("gpu-wheels.sh", {"HARNESS_WHEELHOUSE": str(tmp_path)}, "no mmcv 2.1.0 wheel for cp312"),
        ("gpu-wheels.sh", {"HARNESS_GPU_PYTHON": "312"}, "expected a CPython version"),
        ("gpu-check.sh", {"HARNESS_GPU_PYTHON_BIN": str(tmp_path / "python3")}, "set HARNESS_GPU_PYTHON_BIN"),
    ]
    for script, env, message in cases:
        proc = _script(script, env, str(tmp_path / "out"))
        assert proc.returncode == 1, (script, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (script, proc.stderr)
    assert not (tmp_path / "out").exists()
