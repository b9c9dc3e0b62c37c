"""Paper recipes on fewer GPUs: gradient accumulation (``schedule.accumulate``) keeps the recipe's images a
process, total batch, lr and schedule in optimizer steps; a total batch changed on purpose scales the lr
linearly. The spec, the built config, the dry run, ``cells --recipe``, the schedule, the equivalence of
accumulation and data parallelism (gloo), the ranking set, resume mid-accumulation and the tables' mark."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.experiments.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
DETECTORS = ["faster_rcnn", "cascade_rcnn", "atss", "paa", "mask_rcnn", "yolact", "solov2"]


def coco_variant(tmp_path, gpus: int, **schedule) -> Path:
    """experiments/coco_1x.yaml on ``gpus`` GPUs (``schedule``: keys set at the top level)."""
    data = yaml.safe_load((REPO / "experiments" / "coco_1x.yaml").read_text())
    data["launch"]["gpus_per_run"] = gpus
    data["name"] = f"coco_1x_{gpus}gpu"
    data["schedule"].update(schedule)
    path = tmp_path / f"coco_1x_{gpus}gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def runs_by_cell(path) -> dict:
    return {(r.detector, r.loss): r for r in load_spec(path, DETECTORS).runs()}


# ------------------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("gpus, accumulate", [(4, 1), (2, 2), (1, 4)])
def test_auto_accumulates_to_the_recipes_total_batch_at_its_lr(tmp_path, gpus, accumulate):
    runs = runs_by_cell(coco_variant(tmp_path, gpus))
    for (det, loss), total, per_process, lr in [(("atss", "rs"), 16, 4, 0.008), (("faster_rcnn", "ce"), 16, 4, 0.02),
                                                (("yolact", "rs"), 32, 8, 0.006), (("yolact", "ce"), 64, 16, 0.008)]:
        b = runs[det, loss].batch
        assert (b.run.processes, b.run.per_process, b.run.accumulate, b.run.total) == (gpus, per_process, accumulate,
                                                                                      total)
        assert b.run.lr == b.recipe.lr == lr and b.lr_rule == "recipe" and not b.differs
        assert (b.recipe.processes, b.recipe.per_process, b.recipe.accumulate) == (4, per_process, 1)
        assert runs[det, loss].schedule["accumulate"] == accumulate


def test_accumulation_is_part_of_the_run_id_and_four_gpus_keep_their_ids(tmp_path):
    four, two, one = (runs_by_cell(coco_variant(tmp_path, g)) for g in (4, 2, 1))
    assert four["faster_rcnn", "ce"].run_id == "faster_rcnn-ce-s0-8fdf7fbcfd"  # as before the key existed
    assert "accumulate" not in four["atss", "rs"].identity["schedule"]
    assert two["atss", "rs"].identity["schedule"]["accumulate"] == 2
    ids = [r["atss", "rs"].run_id for r in (four, two, one)]
    assert len(set(ids)) == 3
    # auto resolving to 2 and an explicit 2 are the same run
    explicit = runs_by_cell(coco_variant(tmp_path, 2, accumulate=2))
    assert explicit["atss", "rs"].run_id == two["atss", "rs"].run_id


def test_a_total_batch_changed_on_purpose_scales_the_lr_linearly(tmp_path):
    runs = runs_by_cell(coco_variant(tmp_path, 2, accumulate=1))  # 2 x 4 = 8, the recipe's 16
    b = runs["atss", "rs"].batch
    assert (b.run.total, b.recipe.total, b.lr_rule, b.differs) == (8, 16, "linear", True)
    assert b.run.lr == pytest.approx(0.008 * 8 / 16)
    b = runs_by_cell(coco_variant(tmp_path, 4, batch_per_gpu=8, accumulate=1))["atss", "rs"].batch  # 4 x 8 = 32
    assert (b.run.total, b.lr_rule, b.run.lr) == (32, "linear", pytest.approx(0.016))


def test_impossible_combinations_are_one_line_spec_errors(tmp_path):
    for path, message in [
        (coco_variant(tmp_path, 4, batch_per_gpu=8), "faster_rcnn x ce: schedule.accumulate auto: the recipe's total batch 16 "
                                                     "is not a multiple of 4 process(es) x 8 images = 32"),
        (coco_variant(tmp_path, 3), "is not a multiple of 3 process(es) x 4 images = 12; set schedule.accumulate "
                                    "to a number"),
        # 16 is no multiple of 3 x b for any b: no batch_per_gpu to suggest, a number of GPUs instead
        (coco_variant(tmp_path, 3), "no batch_per_gpu keeps the recipe's total batch on 3 process(es): a number of "
                                    "GPUs that divides 16 does"),
        (coco_variant(tmp_path, 4, batch_per_gpu=8), "or batch_per_gpu to one of 1, 2, 4 (the recipe's total batch kept"),
        (coco_variant(tmp_path, 2, accumulate=0), "schedule.accumulate must be auto or an integer >= 1"),
        (coco_variant(tmp_path, 2, accumulate="twice"), "schedule.accumulate must be auto or an integer >= 1"),
    ]:
        with pytest.raises(SpecError) as info:
            load_spec(path, DETECTORS)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_the_spec_lr_is_used_as_given(tmp_path):
    b = runs_by_cell(coco_variant(tmp_path, 2, lr=0.001))["atss", "rs"].batch
    assert (b.run.lr, b.lr_rule, b.run.accumulate) == (0.001, "spec", 2)


# ------------------------------------------------------------------------------------ the built config


class FakePaths:
    kind, classes, num_classes = "coco", tuple("abcdefgh"), 8
    category_ids = None  # as DatasetPaths: set for coco_format data only

    def __init__(self, tmp_path):
        self.val_ann = tmp_path / "val.json"
        self.val_ann.write_text(json.dumps({"images": [{"id": i} for i in range(10)]}))

    def mmdet_dataset(self, split, pipeline, **kwargs):
        return {"type": "CocoDataset", "split": split, "pipeline": pipeline, **kwargs}


@pytest.mark.parametrize("gpus, accumulate", [(2, 2), (1, 4)])
def test_the_built_config_accumulates_with_the_recipes_images_and_lr(tmp_path, gpus, accumulate):
    from harness.run.train import build_config

    runs = runs_by_cell(coco_variant(tmp_path, gpus))
    for cell, per_process, lr in [(("atss", "rs"), 4, 0.008), (("yolact", "rs"), 8, 0.006)]:
        cfg = build_config(runs[cell], tmp_path / "work", FakePaths(tmp_path))
        assert cfg.optim_wrapper.accumulative_counts == accumulate
        assert cfg.train_dataloader.batch_size == per_process == cfg.recipe["batch_per_gpu"]
        assert cfg.optim_wrapper.optimizer.lr == lr == cfg.recipe["lr"]
        assert cfg.batch["effective_batch"] == gpus * per_process * accumulate == cfg.recipe["total_batch"]
        assert {"type": "AccumulationHook"} in cfg.custom_hooks
    four = build_config(runs_by_cell(coco_variant(tmp_path, 4))["atss", "rs"], tmp_path / "w4", FakePaths(tmp_path))
    assert "accumulative_counts" not in four.optim_wrapper  # no accumulation: mmengine's default, 1


# ------------------------------------------------------------------------------- dry run and cells


def test_the_dry_run_prints_each_runs_batch_and_lr_beside_the_recipes(tmp_path):
    from harness.launch.orchestrate import Request, launch

    lines = []
    launch(Request(spec=coco_variant(tmp_path, 1), executor="slurm", dry_run=True, account="p1", results_root=tmp_path / "r"),
           out=lines.append)
    text = "\n".join(lines)
    assert ("atss          rs     seed 0  coco  1 proc x 4 img x 4 accum = 16, lr 0.008 "
            "(recipe 4 proc x 4 img x 1 accum = 16, lr 0.008)") in text
    assert "yolact        ce     seed 0  coco  1 proc x 16 img x 4 accum = 64, lr 0.008 (recipe 4 proc x 16" in text
    lines.clear()
    launch(Request(spec=coco_variant(tmp_path, 2, accumulate=1), executor="slurm", dry_run=True, account="p1",
                   results_root=tmp_path / "r"), out=lines.append)
    assert ("2 proc x 4 img x 1 accum = 8, lr 0.004 (scaled linearly) (recipe 4 proc x 4 img x 1 accum = 16, "
            "lr 0.008)") in "\n".join(lines)


def test_cells_recipe_shows_both_rules():
    from harness.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["cells", "--recipe", "atss", "rs"]) == 0
    text = out.getvalue()
    assert "recipe: 4 proc x 4 img x 1 accum = 16, lr 0.008" in text
    assert "2 process(es), accumulate auto: 2 proc x 4 img x 2 accum = 16, lr 0.008" in text
    assert "1 process(es), accumulate auto: 1 proc x 4 img x 4 accum = 16, lr 0.008" in text
    assert "4 proc x 8 img x 1 accum = 32, lr 0.016  (lr scaled linearly: 0.008 x 32 / 16" in text


# ------------------------------------------------------------------------------------- the schedule

WARM = {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": 500}
STEP_1X = {"type": "MultiStepLR", "begin": 0, "end": 12, "by_epoch": True, "milestones": [8, 11], "gamma": 0.1}
COSINE = {"type": "CosineAnnealingLR", "begin": 0, "end": 55, "by_epoch": True, "eta_min": 0.0}


def lr_at_optimizer_steps(schedule, iters: int, accumulate: int) -> list[float]:
    """The lr each optimizer step trains at, mmengine's schedulers stepping once per iteration."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS

    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.SGD([param], lr=0.02), accumulative_counts=accumulate)
    wrapper.initialize_count_status(torch.nn.Linear(1, 1), 0, iters)
    schedulers = [PARAM_SCHEDULERS.build({**s, "optimizer": wrapper}) for s in schedule]
    seen = []
    for _ in range(iters):
        lr = wrapper.optimizer.param_groups[0]["lr"]
        wrapper.update_params((param * 0).sum())
        if wrapper._inner_count % accumulate == 0 or wrapper._inner_count == iters:  # it stepped
            seen.append(lr)
        for s in schedulers:
            s.step()
    return seen


@pytest.mark.parametrize("main", [STEP_1X, COSINE])
def test_schedule_steps_count_optimizer_steps(main):
    from harness.run.train import fit_schedule

    steps = 60
    recipe = lr_at_optimizer_steps(fit_schedule([WARM, main], epochs=1, total_iters=steps), steps, 1)
    for k in (2, 4):
        fitted = fit_schedule([WARM, main], epochs=1, total_iters=steps * k, accumulate=k)
        # the warm-up (a fifth of 60 steps) rises over 11 optimizer steps: 11 x k iterations
        assert (fitted[0]["begin"], fitted[0]["end"] - fitted[0]["begin"] - 1) == (k - 1, 11 * k)
        accumulated = lr_at_optimizer_steps(fitted, steps * k, k)
        assert accumulated == pytest.approx(recipe, rel=1e-9)  # the k-th step at the recipe's k-th lr
    assert recipe[0] == pytest.approx(0.02 * 0.001)  # the first step warms up from the recipe's ratio
    if main is STEP_1X:
        assert max(recipe) == pytest.approx(0.02)
        fitted = fit_schedule([WARM, main], epochs=1, total_iters=steps * 2, accumulate=2)
        assert fitted[1]["milestones"] == [40 * 2, 55 * 2]  # 8/12 and 11/12 of 60 optimizer steps
        assert sum(1 for a, b in zip(recipe, recipe[1:]) if b < a * 0.5) == 2  # the two decays


# ------------------------------------------------- accumulation equals data parallelism (gloo, 2 processes)

WORKER = r'''
import json, os, sys
import torch
import torch.distributed as dist
sys.path.insert(0, os.environ["TESTS_DIR"])
from test_accumulation import batches, toy_model
from mmengine.optim import OptimWrapper
from harness.run.hooks import HarnessDistributedDataParallel

dist.init_process_group("gloo")
rank = dist.get_rank()
model = toy_model(os.environ["LOSS"])
ddp = HarnessDistributedDataParallel(module=model)
wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5))
ddp.train_step(batches()[rank], wrapper)
if rank == 0:
    out = {"params": [p.detach().tolist() for p in model.parameters()], "images_per_call": model.images_per_call}
    with open(os.environ["OUT"], "w") as f:
        f.write(json.dumps(out))
dist.barrier()  # neither process leaves while the other still talks to it
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # skip the interpreter's teardown: gloo's threads there can abort a finished process
'''


def batches():
    """Two batches of 2 images x 30 anchors x 3 classes: the images of process 0 and of process 1."""
    import torch

    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(2):
        x = torch.randn(2, 30, 6, generator=g, dtype=torch.float64)
        t = torch.zeros(2, 30, 3, dtype=torch.float64)
        pos = torch.rand(2, 30, 3, generator=g) < 0.08
        t[pos] = torch.rand(int(pos.sum()), generator=g, dtype=torch.float64) * 0.9 + 0.1  # IoU-like qualities
        t[0, 0, 0], t[1, 3, 2] = 0.7, 0.4  # every image has positives
        out.append({"inputs": x, "data_samples": t})
    return out


def toy_model(loss: str):
    """A linear classifier over anchors (float64); the loss is called once per forward with all its images,
    as the harness's heads call a loss over the whole batch of a process."""
    import torch
    from mmengine.model import BaseModel

    from harness.losses import focal_loss, rank_sort_loss

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(6, 3).double()
            self.images_per_call = []

        def forward(self, inputs, data_samples=None, mode="loss"):
            logits = self.fc(inputs)
            self.images_per_call.append(int(logits.shape[0]))
            if loss == "rs":
                return {"loss": rank_sort_loss(logits, data_samples, delta=0.5).total}
            return {"loss": focal_loss(logits, (data_samples > 0).to(logits.dtype))}

    return Toy()


def accumulated(loss: str, accumulate: int, data: list) -> tuple[list, list]:
    import torch
    from mmengine.optim import OptimWrapper

    model = toy_model(loss)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5), accumulative_counts=accumulate)
    wrapper.initialize_count_status(model, 0, len(data))
    for batch in data:
        model.train_step(batch, wrapper)
    return [p.detach().tolist() for p in model.parameters()], model.images_per_call


def two_gloo_processes(tmp_path, loss: str) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"ddp-{loss}.json"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "LOSS": loss, "OUT": str(out), "TESTS_DIR": str(Path(__file__).parent),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER], env=env, cwd=REPO, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("loss", ["focal", "rs"])
def test_two_accumulated_steps_on_one_process_equal_one_step_on_two_gloo_processes(tmp_path, loss):
    import numpy as np

    ddp = two_gloo_processes(tmp_path, loss)
    params, images_per_call = accumulated(loss, 2, batches())
    for a, b in zip(params, ddp["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # each call of the loss sees one process's images: the ranking set (and BatchNorm's batch) of the recipe
    assert images_per_call == [2, 2] and ddp["images_per_call"] == [2]
    if loss == "rs":  # doubling the images a process instead ranks them together: another loss
        import torch

        both = {k: torch.cat([b[k] for b in batches()]) for k in ("inputs", "data_samples")}
        doubled, calls = accumulated(loss, 1, [both])
        assert calls == [4]
        assert not np.allclose(np.array(doubled[0]), np.array(params[0]), rtol=1e-6)


# --------------------------------------------------------------------------- resume mid-accumulation


class Preempted(RuntimeError):
    pass


def train_toy(work_dir: Path, *, resume: bool = False, stop_after_epoch: int | None = None, keep: bool = True):
    """Two epochs of 3 iterations (6 items, 2 a batch), accumulating 2: epoch 1 ends inside an accumulation."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from harness.run.hooks import AccumulationHook

    class Stop(Hook):
        def before_train_epoch(self, runner):
            if stop_after_epoch is not None and runner.epoch == stop_after_epoch:
                raise Preempted()

    data = batches()
    items = [{"inputs": b["inputs"][i], "data_samples": b["data_samples"][i]} for b in data for i in range(2)]
    items += items[:2]
    runner = Runner(
        model=toy_model("focal"), work_dir=str(work_dir), experiment_name=f"toy-{work_dir.name}-{resume}",
        train_dataloader={"dataset": items, "sampler": {"type": "DefaultSampler", "shuffle": False}, "batch_size": 2,
                          "collate_fn": {"type": "default_collate"}, "num_workers": 0},
        train_cfg={"by_epoch": True, "max_epochs": 2},
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.5}, "accumulative_counts": 2},
        default_hooks={"checkpoint": {"type": "CheckpointHook", "interval": 1}, "logger": None},
        custom_hooks=[AccumulationHook(), Stop()] if keep else [Stop()],
        resume=resume, log_level="ERROR", default_scope="mmengine",
    )
    try:
        runner.train()
    except Preempted:
        return None
    model = runner.model
    return [p.detach().clone() for p in model.parameters()]


def test_a_run_resumed_mid_accumulation_ends_as_an_uninterrupted_one(tmp_path):
    import torch

    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    straight = train_toy(tmp_path / "straight")
    assert train_toy(tmp_path / "resumed", stop_after_epoch=1) is None  # preempted after epoch 1's checkpoint
    ckpt = torch.load(tmp_path / "resumed" / "epoch_1.pth", weights_only=False)
    assert ckpt["harness_accumulation"]["inner_count"] == 3  # saved inside the second accumulation
    resumed = train_toy(tmp_path / "resumed", resume=True)
    for a, b in zip(straight, resumed):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # without the hook mmengine resumes with the partial accumulation lost: another end
    assert train_toy(tmp_path / "lost", stop_after_epoch=1, keep=False) is None
    lost = train_toy(tmp_path / "lost", resume=True, keep=False)
    assert not all(torch.allclose(a, b) for a, b in zip(straight, lost))


# ------------------------------------------------------------------------------------------ tables


def test_tables_mark_cells_whose_runs_differ_from_the_recipes_batch():
    from harness.results.frame import rows_frame
    from harness.results.tables import build_tables, cell_stats

    def row(loss, seed, **batch):
        prov = {"effective_batch": 16, "recipe_batch": 16, "lr": 0.012, "recipe_lr": 0.012, **batch}
        return {"run_id": f"atss-{loss}-s{seed}", "experiment": "x", "detector": "atss", "loss": loss, "seed": seed,
                "dataset": {"kind": "coco"}, "profile": "paper", "schedule": {}, "status": "done",
                "metrics": {"bbox_AP": 0.3 + seed / 100}, "curve": [], "provenance": prov}

    frame = rows_frame([
        row("rs", 0, batch_per_process=4, recipe_batch_per_process=4, batch_differs=False),
        row("rs", 1, batch_per_process=4, recipe_batch_per_process=4, accumulate=2, batch_differs=False),
        row("ap", 0, batch_per_process=8, recipe_batch_per_process=4, batch_differs=True),  # same total, 8 a process
        row("focal", 0, effective_batch=8),  # an older row: its total batch only
    ])
    assert list(frame["off_recipe"]) == [True, True, False, False]  # ordered focal, ap, rs, rs
    stats = cell_stats(frame, ["bbox_AP"], paper=False).set_index("loss")
    assert stats.loc["ap", "text"].endswith("‡") and stats.loc["focal", "text"].endswith("‡")
    assert "‡" not in stats.loc["rs", "text"]
    md = build_tables(frame, "bbox_AP").markdown()
    assert "‡: some runs of the cell trained another total batch or images a process than the cell's recipe" in md
    assert "| 30.0 ‡ |" in md  # the metrics table keeps the mark


def test_paper_runs_test_one_image_a_process_and_tiny_runs_never_leave_a_last_batch_of_one(tmp_path):
    """As the releases test (mmdet's configs: one image a GPU): a batch would pad each image to the
    batch's largest. The tiny profile's GroupNorm heads need more than one image a batch."""
    from harness.run.train import build_config

    paper = runs_by_cell(coco_variant(tmp_path, 4))
    for cell in [("atss", "rs"), ("mask_rcnn", "ce"), ("yolact", "rs"), ("solov2", "rs")]:
        cfg = build_config(paper[cell], tmp_path / "work", FakePaths(tmp_path))
        assert cfg.test_dataloader.batch_size == 1, cell
    tiny = {(r.detector, r.loss): r for r in load_spec(REPO / "experiments" / "synthetic.yaml", DETECTORS).runs()}
    cfg = build_config(tiny["atss", "rs"], tmp_path / "tiny", FakePaths(tmp_path))  # 10 validation images
    assert cfg.test_dataloader.batch_size == 4
