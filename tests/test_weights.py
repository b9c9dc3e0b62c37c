"""Backbone initialisation as data: checkpoints load through mmengine's ``init_cfg`` (a path, or
``torchvision://`` through torch's hub cache), frozen stages stay frozen, BatchNorm stays in eval mode
where the recipe says so; a spec's missing checkpoints are named with how to pre-fetch them, and a run
fails before training without them. Offline: every checkpoint here is written by the test."""

from __future__ import annotations

import copy
import hashlib
import os
import warnings

import pytest
import torch
import yaml

from harness.cli import main
from harness.detectors import build_cell_config
from harness.detectors.weights import checkpoint_for, missing_for_run, missing_weights
from harness.experiments.spec import load_spec

DETECTORS = ["faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn", "yolact", "solov2"]


def _tiny_backbone_state(seed: int) -> dict:
    """A state dict for the tiny profile's backbone (ResNet-18 at a quarter width), random but seeded."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    torch.manual_seed(seed)
    cfg = copy.deepcopy(build_cell_config("atss", "rs").model.backbone.to_dict())
    cfg.update(init_cfg=None, frozen_stages=-1, norm_eval=False)
    net = MODELS.build(cfg)
    for p in net.parameters():
        p.data.normal_()
    for name, b in net.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            b.data.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in net.state_dict().items()}


def _model(backbone_init: str):
    from harness.detectors.check import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(build_cell_config("atss", "rs", classes=("a", "b"), backbone_init=backbone_init))


def _assert_loaded(model, state):
    got = model.backbone.state_dict()
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(got[k], v), k


def _assert_recipe_freezing(model):
    """mmdet's ResNet recipe (frozen_stages 1, norm_eval True): the stem and layer1 get no gradient, every
    BatchNorm stays in eval mode when the model trains."""
    model.train()
    frozen = [p for n, p in model.backbone.named_parameters() if n.startswith(("conv1", "bn1", "layer1."))]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for n, p in model.backbone.named_parameters() if n.startswith("layer4."))
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    x = torch.randn(1, 3, 64, 64)
    sum(o.sum() for o in model.backbone(x)).backward()
    assert all(p.grad is None for p in frozen)
    assert any(p.grad is not None for n, p in model.backbone.named_parameters() if n.startswith("layer4."))


def test_a_checkpoint_path_is_loaded_into_the_backbone(tmp_path):
    state = _tiny_backbone_state(1)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    model = _model(str(path))
    _assert_loaded(model, state)
    _assert_recipe_freezing(model)


def test_a_torchvision_checkpoint_is_read_from_torchs_hub_cache(tmp_path, monkeypatch):
    from harness.detectors.weights import hub_checkpoint_dir, torchvision_url

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = "torchvision://resnet18"
    target = hub_checkpoint_dir() / torchvision_url(name).rsplit("/", 1)[1]
    assert str(target).startswith(str(tmp_path / "torch" / "hub" / "checkpoints"))
    state = _tiny_backbone_state(2)
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    model = _model(name)
    _assert_loaded(model, state)
    _assert_recipe_freezing(model)


def test_scratch_trains_every_stage_and_its_batchnorm():
    model = _model("scratch")
    model.train()
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert all(m.training for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def _checkpoint_bytes(checkpoint: str) -> bytes:
    return f"weights of {checkpoint}".encode()


def _fake_torchvision_names(monkeypatch) -> None:
    """torchvision's checkpoint file names, each carrying the sha256 prefix of the bytes
    :func:`_write_checkpoint` writes for it (the real files cannot be downloaded here)."""
    from harness.detectors import weights

    real = weights.torchvision_url

    def url(checkpoint: str) -> str:
        folder, name = real(checkpoint).rsplit("/", 1)
        digest = hashlib.sha256(_checkpoint_bytes(checkpoint)).hexdigest()[:8]
        return f"{folder}/{name.split('-')[0]}-{digest}.pth"

    monkeypatch.setattr(weights, "torchvision_url", url)


def _write_checkpoint(item, data: bytes | None = None) -> None:
    item.local_path.parent.mkdir(parents=True, exist_ok=True)
    item.local_path.write_bytes(_checkpoint_bytes(item.checkpoint) if data is None else data)


def _spec(tmp_path, **extra):
    data = {"detectors": ["atss", "solov2"], "losses": ["rs"], "profile": "paper", **extra}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path, DETECTORS)


def test_missing_weights_names_each_checkpoint_and_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = _spec(tmp_path)
    lines = missing_weights(spec)
    assert len(lines) == 2
    r50 = next(line for line in lines if "torchvision://resnet50" in line)
    assert "atss x rs" in r50 and f"harness weights {spec.path}" in r50 and "resnet50-0676ba61.pth" in r50
    assert "\n" not in r50 and any("torchvision://resnet34" in line and "solov2 x rs" in line for line in lines)
    from harness.detectors.weights import needed

    _fake_torchvision_names(monkeypatch)
    for item in needed(spec.runs()):
        _write_checkpoint(item)
    assert missing_weights(spec) == []
    # scratch (and the tiny profile's default) needs nothing; a per-detector path is checked as a file
    assert missing_weights(_spec(tmp_path, backbone_init="scratch")) == []
    spec = _spec(tmp_path, overrides={"solov2": {"backbone_init": str(tmp_path / "r34.pth")}})
    assert [line for line in missing_weights(spec) if "r34.pth" in line] == [
        f"backbone checkpoint {tmp_path / 'r34.pth'} (needed by solov2 x rs) does not exist: put the file there "
        f"(backbone_init)"]
    assert checkpoint_for("solov2", "tiny", None) is None


def test_backbone_init_is_part_of_the_run_id_and_validated(tmp_path):
    from harness.experiments.spec import SpecError

    a = _spec(tmp_path).runs()[0]
    b = _spec(tmp_path, backbone_init="scratch").runs()[0]
    assert a.backbone_init == "imagenet" and b.backbone_init == "scratch" and a.run_id != b.run_id
    tiny = {"detectors": ["atss"], "losses": ["rs"], "backbone_init": "imagenet"}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tiny))
    with pytest.raises(SpecError, match="imagenet needs the paper profile"):
        load_spec(tmp_path / "t.yaml", DETECTORS)


def test_a_run_without_its_checkpoint_fails_before_training(tmp_path, monkeypatch):
    from harness.run.train import RunFailed, train_and_evaluate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    run = _spec(tmp_path, detectors=["atss"]).runs()[0]
    assert "harness weights" in missing_for_run(run)
    with pytest.raises(RunFailed, match="torchvision://resnet50 .* is not in torch's cache"):
        train_and_evaluate(run, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_weights_command_fetches_into_the_cache_or_reports(tmp_path, monkeypatch, capsys):
    from harness.detectors import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = _spec(tmp_path)
    assert main(["weights", "--check", str(spec.path)]) == 1
    assert capsys.readouterr().out.count("missing  torchvision://") == 2
    fetched = []

    def fake_download(url, dst, hash_prefix=None, progress=True):  # the bytes the name's hash describes
        fetched.append((url, hash_prefix))
        open(dst, "wb").write(_checkpoint_bytes(weights.TORCHVISION + url.rsplit("/", 1)[1].split("-")[0]))

    with monkeypatch.context() as m:
        _fake_torchvision_names(m)
        m.setattr(torch.hub, "download_url_to_file", fake_download)
        assert main(["weights", str(spec.path)]) == 0
        assert sorted(u.rsplit("-", 1)[0] for u, _ in fetched) == ["https://download.pytorch.org/models/resnet34",
                                                                  "https://download.pytorch.org/models/resnet50"]
        assert all(h and u.endswith(f"-{h}.pth") for u, h in fetched)  # the hash in the file name is checked
        assert main(["weights", "--check", str(spec.path)]) == 0
        assert "present  torchvision://resnet50" in capsys.readouterr().out

    def failing(url, dst, hash_prefix=None, progress=True):
        raise OSError("no route to host")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "other"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", failing)
    assert main(["weights"]) == 1
    assert "failed   cannot download https://download.pytorch.org/models/resnet50-0676ba61.pth" in capsys.readouterr().out
    assert main(["weights", str(tmp_path / "nope.yaml")]) == 2
    assert weights.paper_checkpoints()[0].checkpoint == "torchvision://resnet50"


def test_a_corrupt_torchvision_checkpoint_is_reported_and_not_usable(tmp_path, monkeypatch, capsys):
    """A file at a torchvision checkpoint's cache path whose sha256 does not start with the hash its name
    carries (a truncated or corrupt download) is not usable: `weights --check` and the checks before a
    local launch (missing_weights) say so in one line (expected and actual hash, delete and fetch again);
    `weights` without --check neither replaces it nor downloads."""
    from harness.detectors.weights import needed

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _fake_torchvision_names(monkeypatch)
    spec = _spec(tmp_path)
    items = {item.checkpoint: item for item in needed(spec.runs())}
    for item in items.values():
        _write_checkpoint(item)
    assert missing_weights(spec) == []
    r50 = items["torchvision://resnet50"]
    whole = _checkpoint_bytes(r50.checkpoint)
    expected = hashlib.sha256(whole).hexdigest()[:8]
    actual = hashlib.sha256(whole[:-4]).hexdigest()[:8]
    _write_checkpoint(r50, whole[:-4])  # truncated
    assert r50.present() and r50.local_path.name == f"resnet50-{expected}.pth"
    line, = missing_weights(spec)
    assert line == (f"torchvision://resnet50 (needed by atss x rs): {r50.local_path} is corrupt or incomplete "
                    f"(its sha256 starts {actual}, its name says {expected}): delete it and fetch it again "
                    f"(`harness weights {spec.path}`)")
    assert main(["weights", "--check", str(spec.path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("corrupt  torchvision://resnet50 (needed by atss x rs): ") and expected in out[0]
    assert out[1].startswith("present  torchvision://resnet34")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    assert main(["weights", str(spec.path)]) == 1
    assert capsys.readouterr().out.count("corrupt  ") == 1 and r50.local_path.read_bytes() == whole[:-4]


def test_a_files_hash_is_computed_once_per_path_size_and_mtime(tmp_path):
    from harness.files import file_sha256

    path = tmp_path / "w.pth"
    path.write_bytes(b"aaaa")
    first = file_sha256(path)
    assert first == hashlib.sha256(b"aaaa").hexdigest()
    stat = path.stat()
    path.write_bytes(b"bbbb")  # same size; the mtime put back: taken for the same file, not read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_sha256(path) == hashlib.sha256(b"bbbb").hexdigest()


def test_a_relative_checkpoint_path_is_read_from_the_spec_files_folder(tmp_path, monkeypatch, capsys):
    """As a spec's data and loss-module paths: `backbone_init: r50.pth` beside the spec names that file
    wherever the command runs from (a job started elsewhere starts from the same file)."""
    from harness.cli import main

    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "r50.pth").write_bytes(b"x")
    data = {"detectors": ["atss"], "losses": ["rs"], "profile": "paper", "backbone_init": "r50.pth",
            "overrides": {"atss": {"backbone_init": "sub/r50b.pth"}}}
    (folder / "exp.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    spec = load_spec(folder / "exp.yaml", DETECTORS)
    assert spec.backbone_init == str(folder / "r50.pth")
    assert spec.runs()[0].backbone_init == str(folder / "sub" / "r50b.pth")
    data.pop("overrides")
    (folder / "exp.yaml").write_text(yaml.safe_dump(data))
    assert main(["weights", "specs/exp.yaml", "--check"]) == 0, capsys.readouterr()
