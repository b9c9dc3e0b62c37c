"""Experiment specs (``experiments/*.yaml``): declared grids that expand into runs.

A spec names the data, the scale profile, the detectors and losses to cross, the seeds, the schedule
and the launch resources, with per-detector overrides::

    name: synthetic                 # results go to results/<name>/ (default: the file's stem)
    dataset: {kind: synthetic}      # synthetic | synthetic_lvis | coco | lvis (+ root for coco / lvis, repeat_factor),
                                    # or your own data: {kind: coco_format, name, train: {ann, images}, val: ...};
                                    # a list of such mappings crosses every cell with each
    profile: tiny                   # tiny | paper
    detectors: all                  # or a list of detector names
    losses: all                     # the five of the comparison, or a list of registered loss names
    seeds: [0]
    schedule: {epochs: 2}           # see SCHEDULE_KEYS
    launch: {cluster: local, gpus_per_run: 0, cpus_per_run: 1, mem_gb: 4, time_min: 20, array_parallelism: 2}
    overrides:                      # per detector: schedule, launch and backbone_init keys
      solov2: {schedule: {epochs: 3}}
    backbone_init: scratch          # imagenet | scratch | PATH (default: paper imagenet, tiny scratch)
    loss_modules: []                # external loss modules to import (dotted names or .py paths; a relative
                                    # path is read from the spec file's folder)

``backbone_init`` is where a backbone's weights start: ``imagenet`` (the recipe's checkpoint, e.g.
``torchvision://resnet50``, with its frozen stages and BatchNorm mode; ``harness weights SPEC``
pre-fetches it), ``scratch`` (random, nothing frozen) or a checkpoint file's path. It is part of a run's id.

:func:`load_spec` validates everything before anything runs: an unknown key, detector or loss, or a bad
value raises :class:`SpecError` whose message names the valid choices. :meth:`Spec.runs` expands the
spec into :class:`RunSpec` s; a run's id is a hash of its fully resolved configuration (data, profile,
detector, loss, schedule, number of training processes) and seed, so identical runs share an id across
specs and edits that change a run change its id. Other launch resources are not part of the id: where a
run executes does not change it, but how many processes share its batch does.

A run trains in ``world_size`` processes: ``launch.tasks_per_run``, or one per GPU (``gpus_per_run``),
or one on CPU. Several processes are mmengine's distributed data parallel training, one node × that
many tasks: NCCL with one GPU each, or gloo on CPU (``tasks_per_run: 2, gpus_per_run: 0``, which is
how the tests exercise the multi-process path without a GPU). Each process loads ``batch_per_gpu``
images (default: the recipe's), and ``schedule.accumulate`` iterations make one optimizer step, so the
total batch is ``world_size × batch_per_gpu × accumulate``. ``accumulate: auto`` (the default) is the
recipe's total batch over ``world_size × batch_per_gpu`` (a run on fewer GPUs than its recipe accumulates
to the recipe's total batch, lr and schedule; a spec error where it does not divide); a number changes the
total batch on purpose, and the lr is then scaled linearly from the recipe's
(:mod:`harness.experiments.batch`). The resolved number is part of a run's id when it is above 1.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from harness.experiments.batch import AUTO, BatchError, RunBatch, run_batch

TOP_KEYS = ("name", "description", "dataset", "profile", "detectors", "losses", "seeds", "schedule", "launch",
            "overrides", "backbone_init", "loss_modules")
OVERRIDE_KEYS = ("schedule", "launch", "backbone_init")
DATASET_KEYS = ("kind", "root", "repeat_factor", "train_images", "val_images", "name", "train", "val")
DATASET_KINDS = ("synthetic", "synthetic_lvis", "coco", "lvis", "coco_format")
PROFILES = ("tiny", "paper")
# Schedule keys; None means "the cell's recipe" (lr and batch from the detector's published recipe).
SCHEDULE_KEYS = {
    "epochs": None,  # None: the profile's default
    "lr": None,
    "batch_per_gpu": None,
    "checkpoint_every": 1,  # epochs between checkpoints
    "val_every": None,  # k: also validate every k epochs and after the last (the row's val_curve); None: at the end only
    "max_iters_per_epoch": None,  # cap for quick runs (iterations, i.e. loader batches, an epoch)
    "accumulate": "auto",  # iterations per optimizer step: auto | N (harness/experiments/batch.py)
}
LAUNCH_KEYS = {
    "executor": "auto",  # auto | slurm | local | debug
    "cluster": "local",  # a slurm/profiles/<name>.yaml
    "partition": None,  # None: the profile's default partition
    "gpus_per_run": 0,
    "tasks_per_run": None,  # training processes; None: one per GPU (one on CPU). > 1 on CPU: gloo DDP
    "cpus_per_run": 1,  # CPUs of the whole run (shared by its tasks)
    "mem_gb": 4,
    "time_min": 30,
    "array_parallelism": 4,
    "account": None,  # None: the profile's account
}
EXECUTORS = ("auto", "slurm", "local", "debug")


class SpecError(ValueError):
    """A spec that does not validate; the message names the file, the key and the valid choices."""


def _suggest(value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid: {', '.join(choices)}"


def _check_keys(where: str, mapping: Mapping, valid: Iterable[str]) -> None:
    valid = list(valid)
    for key in mapping:
        if key not in valid:
            raise SpecError(f"{where}: unknown key {key!r}{_suggest(key, valid)}")


def _positive_int(where: str, value: Any, allow_none: bool = False, allow_zero: bool = False) -> Any:
    if value is None and allow_none:
        return None
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{where} must be an integer >= {low}, got {value!r}")
    return value


def _positive_number(where: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(f"{where} must be a number > 0, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a cell (detector × loss) with a seed, fully resolved."""

    experiment: str
    detector: str
    loss: str
    seed: int
    dataset: Mapping[str, Any]
    profile: str
    schedule: Mapping[str, Any]
    launch: Mapping[str, Any]
    loss_modules: tuple[str, ...] = ()
    # imagenet | scratch | a checkpoint path (resolved: never None). Rows written before the key existed
    # trained from scratch, hence the default.
    backbone_init: str = "scratch"
    # The folder relative ``.py`` paths of ``loss_modules`` are read from (the spec file's folder): a job
    # process, wherever it starts, imports them from there. Not part of the run's id.
    origin: str = ""

    @property
    def identity(self) -> dict:
        """What determines the run's result (hashed into its id). The schedule's ``accumulate`` (resolved:
        iterations per optimizer step) is in it when the run accumulates; without accumulation (1) it is
        left out, so a run that does not accumulate keeps the id it had before the key existed."""
        schedule = {k: v for k, v in self.schedule.items() if not (k == "accumulate" and v in (1, None))}
        return {
            "dataset": dict(self.dataset),
            "profile": self.profile,
            "detector": self.detector,
            "loss": self.loss,
            "schedule": schedule,
            "world_size": self.world_size,
            "seed": self.seed,
            "loss_modules": list(self.loss_modules),
            "backbone_init": self.backbone_init,
        }

    @property
    def run_id(self) -> str:
        """``<detector>-<loss>-s<seed>-<digest of its identity>`` (:func:`parse_run_id` reads it back)."""
        blob = json.dumps(self.identity, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{self.detector}-{self.loss}-s{self.seed}-{digest}"

    @property
    def world_size(self) -> int:
        """Training processes of the run: ``tasks_per_run``, else one per GPU, else one."""
        return self.launch.get("tasks_per_run") or max(1, self.launch["gpus_per_run"])

    @property
    def batch(self) -> RunBatch:
        """Processes x images a process x accumulation = total batch, and the lr, beside the recipe's."""
        return run_batch(self.detector, self.loss, self.profile, self.world_size, self.schedule)

    @property
    def resources(self) -> tuple:
        """Runs with equal resources go into one job array."""
        keys = ("cluster", "partition", "gpus_per_run", "cpus_per_run", "mem_gb", "time_min")
        return tuple(self.launch[k] for k in keys) + (self.world_size, self.launch.get("account"))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["run_id"] = self.run_id
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RunSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["loss_modules"] = tuple(kwargs.get("loss_modules", ()))
        return cls(**kwargs)


_RUN_ID = re.compile(r"^(?P<detector>[^-]+)-(?P<loss>.+)-s(?P<seed>\d+)-[0-9a-f]+$")


def parse_run_id(run_id: str) -> tuple[str, str, int] | None:
    """(detector, loss, seed) of a run id as :attr:`RunSpec.run_id` writes it, else None."""
    named = _RUN_ID.match(run_id)
    return (named["detector"], named["loss"], int(named["seed"])) if named else None


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    path: Path | None
    datasets: tuple[Mapping[str, Any], ...]
    profile: str
    detectors: tuple[str, ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    schedule: Mapping[str, Any]
    launch: Mapping[str, Any]
    overrides: Mapping[str, Mapping[str, Any]]
    loss_modules: tuple[str, ...]
    description: str = ""
    origin: str = ""  # see RunSpec.origin
    backbone_init: str = "scratch"  # resolved; overrides may name another per detector
    only: frozenset[tuple[str, str]] | None = None  # restrict to these (detector, loss) cells
    # (detector, dataset index) pairs `detectors: all` leaves out (a mask detector on data without masks),
    # and the note saying so for each
    left_out: frozenset[tuple[str, int]] = frozenset()
    notes: tuple[str, ...] = ()

    def runs(self) -> list[RunSpec]:
        out = []
        for detector in self.detectors:
            over = self.overrides.get(detector, {})
            schedule = {**self.schedule, **over.get("schedule", {})}
            launch = {**self.launch, **over.get("launch", {})}
            for (index, dataset), loss, seed in itertools.product(enumerate(self.datasets), self.losses, self.seeds):
                if self.only is not None and (detector, loss) not in self.only:
                    continue
                if (detector, index) in self.left_out:
                    continue
                out.append(
                    RunSpec(
                        experiment=self.name,
                        detector=detector,
                        loss=loss,
                        seed=seed,
                        dataset=copy.deepcopy(dict(dataset)),
                        profile=self.profile,
                        schedule=self._resolved(schedule, launch, detector, loss),
                        launch=launch,
                        loss_modules=self.loss_modules,
                        backbone_init=over.get("backbone_init") or self.backbone_init,
                        origin=self.origin,
                    )
                )
        return out


    def _resolved(self, schedule: Mapping, launch: Mapping, detector: str, loss: str) -> dict:
        """``schedule`` with ``accumulate`` resolved to a number for this cell (auto: from its recipe)."""
        processes = RunSpec(self.name, detector, loss, 0, {}, self.profile, schedule, launch).world_size
        try:
            batch = run_batch(detector, loss, self.profile, processes, schedule)
        except BatchError as exc:
            where = f"{self.path or self.name}"
            raise SpecError(f"{where}: {detector} x {loss}: schedule.{exc}") from None
        return {**schedule, "accumulate": batch.run.accumulate}


def _names(where: str, value: Any, valid: list[str], every: Iterable[str] | None = None) -> tuple[str, ...]:
    """``value`` as names checked against ``valid``; ``'all'`` is ``every`` (default: all the valid names)."""
    if value == "all":
        return tuple(valid) if every is None else tuple(n for n in every if n in valid)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where} must be 'all' or a non-empty list of names; valid: {', '.join(valid)}")
    for v in value:
        if v not in valid:
            raise SpecError(f"{where}: unknown name {v!r}{_suggest(v, valid)}")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}: names repeat in {value}")
    return tuple(value)


def _schedule(where: str, raw: Any) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be a mapping of {', '.join(SCHEDULE_KEYS)}")
    _check_keys(where, raw, SCHEDULE_KEYS)
    out = dict(raw)
    for key in ("epochs", "batch_per_gpu", "val_every", "max_iters_per_epoch"):
        if key in out:
            out[key] = _positive_int(f"{where}.{key}", out[key], allow_none=True)
    if "checkpoint_every" in out:
        out["checkpoint_every"] = _positive_int(f"{where}.checkpoint_every", out["checkpoint_every"])
    if "lr" in out:
        out["lr"] = _positive_number(f"{where}.lr", out["lr"], allow_none=True)
    if "accumulate" in out and out["accumulate"] != AUTO:
        if isinstance(out["accumulate"], bool) or not isinstance(out["accumulate"], int) or out["accumulate"] < 1:
            raise SpecError(f"{where}.accumulate must be {AUTO} or an integer >= 1 (iterations per optimizer step), "
                            f"got {out['accumulate']!r}")
    return out


def _launch(where: str, raw: Any) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where} must be a mapping of {', '.join(LAUNCH_KEYS)}")
    _check_keys(where, raw, LAUNCH_KEYS)
    out = dict(raw)
    if "executor" in out and out["executor"] not in EXECUTORS:
        raise SpecError(f"{where}.executor: {out['executor']!r} is not one of {', '.join(EXECUTORS)}")
    for key in ("gpus_per_run",):
        if key in out:
            out[key] = _positive_int(f"{where}.{key}", out[key], allow_zero=True)
    for key in ("cpus_per_run", "time_min", "array_parallelism"):
        if key in out:
            out[key] = _positive_int(f"{where}.{key}", out[key])
    if "tasks_per_run" in out:
        out["tasks_per_run"] = _positive_int(f"{where}.tasks_per_run", out["tasks_per_run"], allow_none=True)
    if "mem_gb" in out:
        out["mem_gb"] = _positive_number(f"{where}.mem_gb", out["mem_gb"])
    for key in ("cluster", "partition", "account"):
        if key in out and out[key] is not None and not isinstance(out[key], str):
            raise SpecError(f"{where}.{key} must be a name, got {out[key]!r}")
    return out


def _check_tasks(where: str, launch: Mapping) -> None:
    """A GPU run has one task per GPU; CPU tasks must each get a CPU."""
    tasks, gpus, cpus = launch["tasks_per_run"], launch["gpus_per_run"], launch["cpus_per_run"]
    if tasks is None:
        return
    if gpus and tasks != gpus:
        raise SpecError(f"{where}: tasks_per_run {tasks} with gpus_per_run {gpus}; a GPU run has one task per GPU, "
                        f"so leave tasks_per_run out (or set it to {gpus})")
    if not gpus and tasks > cpus:
        raise SpecError(f"{where}: tasks_per_run {tasks} on CPU needs cpus_per_run >= {tasks} (one CPU per task), "
                        f"got {cpus}")


def _coco_format(where: str, raw: Mapping, base: Path) -> dict:
    """The ``name`` and the two splits of a ``coco_format`` dataset, paths made absolute (relative ones are
    read from ``base``, the spec file's folder), so that a job started anywhere (a SLURM node) reads the
    same files. The files themselves are checked before anything trains (:mod:`harness.data.coco_format`)."""
    from harness.data.coco_format import SPLIT_KEYS, SPLITS, resolve_paths

    if "root" in raw:
        raise SpecError(f"{where}.root does not apply to coco_format data: give train.ann, train.images, val.ann "
                        f"and val.images (relative to the spec's folder, or absolute)")
    name = raw.get("name")
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise SpecError(f"{where}.name: coco_format data needs a name (its label in tables: letters, digits, '.', "
                        f"'-' or '_'), got {name!r}")
    if name in DATASET_KINDS:
        raise SpecError(f"{where}.name: {name!r} is a dataset kind's name; choose another (tables would confuse them)")
    for split in SPLITS:
        item = raw.get(split)
        if not isinstance(item, Mapping) or set(item) != set(SPLIT_KEYS) or not all(
                isinstance(item[k], str) and item[k] for k in SPLIT_KEYS):
            raise SpecError(f"{where}.{split} must be {{ann: FILE.json, images: FOLDER}} (paths relative to the spec's "
                            f"folder, or absolute), got {item!r}")
    return {"name": name, **resolve_paths(raw, base)}


def _dataset(where: str, raw: Any, base: Path | None = None) -> dict:
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, Mapping) or "kind" not in raw:
        raise SpecError(f"{where} must name a kind: one of {', '.join(DATASET_KINDS)}")
    _check_keys(where, raw, DATASET_KEYS)
    out = {"kind": raw["kind"], "root": raw.get("root"), "repeat_factor": raw.get("repeat_factor")}
    if out["kind"] not in DATASET_KINDS:
        raise SpecError(f"{where}.kind: {out['kind']!r} is not one of {', '.join(DATASET_KINDS)}")
    if out["kind"] == "coco_format":
        out.update(_coco_format(where, raw, base or Path.cwd()))
    else:
        for key in ("name", "train", "val"):
            if key in raw:
                raise SpecError(f"{where}.{key} applies to coco_format data only (your own COCO-format files)")
    if out["repeat_factor"] is not None:
        out["repeat_factor"] = _positive_number(f"{where}.repeat_factor", out["repeat_factor"])
        if out["kind"] not in ("lvis", "synthetic_lvis", "coco_format"):
            raise SpecError(f"{where}.repeat_factor applies to lvis, synthetic_lvis and coco_format data only")
    for key in ("train_images", "val_images"):
        if key in raw:
            if not out["kind"].startswith("synthetic"):
                raise SpecError(f"{where}.{key} applies to synthetic data only")
            out[key] = _positive_int(f"{where}.{key}", raw[key])
    if out["root"] is not None and not isinstance(out["root"], str):
        raise SpecError(f"{where}.root must be a path, got {out['root']!r}")
    if out["root"] is not None and out["kind"].startswith("synthetic"):
        raise SpecError(f"{where}.root applies to coco and lvis data only: {out['kind']} data is generated and cached "
                        f"under $HARNESS_DATA_DIR (default data/); remove root")
    return out


def _datasets(where: str, raw: Any, base: Path | None = None) -> tuple[dict, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise SpecError(f"{where} must not be an empty list")
    out = tuple(_dataset(f"{where}[{i}]" if isinstance(raw, list) else where, item, base)
                for i, item in enumerate(items))
    if len({json.dumps(d, sort_keys=True) for d in out}) != len(out):
        raise SpecError(f"{where}: the same dataset appears twice")
    names = [d["name"] for d in out if d.get("name")]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: two datasets are named {next(n for n in names if names.count(n) > 1)!r}; "
                        f"give each its own name (its label in tables)")
    return out


def _mask_detectors_left_out(where: str, datasets: tuple, detectors: tuple, every: bool):
    """A mask detector (Mask R-CNN, YOLACT, SOLOv2) needs a mask on every annotation. On ``coco_format``
    data without them it is refused when the spec names it, and left out (with a note) under
    ``detectors: all``. Returns (left_out, notes). A file that cannot be read here is left to the data
    checks, which run before anything trains."""
    from harness.data.coco_format import mask_coverage, masks_missing
    from harness.detectors.grid import DETECTORS

    masked = [d for d in detectors if d in DETECTORS and "segm" in DETECTORS[d].outputs]
    left_out, notes = set(), []
    for index, dataset in enumerate(datasets):
        if dataset["kind"] != "coco_format" or not masked:
            continue
        coverage = mask_coverage(dataset)
        why = masks_missing(coverage) if coverage else None
        if not why:
            continue
        if not every:
            raise SpecError(f"{where}.detectors: {', '.join(masked)} {'needs' if len(masked) == 1 else 'need'} a mask "
                            f"on every annotation, but dataset "
                            f"{dataset['name']} lacks them ({why}); remove {'it' if len(masked) == 1 else 'them'} from "
                            f"detectors or add segmentations (`detectors: all` leaves them out of such data)")
        left_out |= {(d, index) for d in masked}
        notes.append(f"note: dataset {dataset['name']} has no masks ({why}): {', '.join(masked)} left out of it")
    return frozenset(left_out), tuple(notes)


def parse_spec(raw: Any, *, name: str, path: Path | None = None, detectors: list[str], losses_loader=None) -> Spec:
    """Validate a spec's parsed YAML. ``detectors``: the valid detector names. ``losses_loader``:
    called with the spec's ``loss_modules``, returns the valid loss names after importing them."""
    where = str(path) if path else name
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: a spec is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(where, raw, TOP_KEYS)
    for key in ("detectors", "losses"):
        if key not in raw:
            raise SpecError(f"{where}: missing key {key!r}")
    loss_modules = raw.get("loss_modules") or []
    if not isinstance(loss_modules, list) or not all(isinstance(m, str) for m in loss_modules):
        raise SpecError(f"{where}.loss_modules must be a list of module names or .py paths")
    origin = str(path.resolve().parent) if path else str(Path.cwd())
    valid_losses = losses_loader(loss_modules, origin) if losses_loader else []
    exp_name = raw.get("name", name)
    if not isinstance(exp_name, str) or not exp_name.replace("_", "").replace("-", "").isalnum():
        raise SpecError(f"{where}.name must be letters, digits, '-' or '_', got {exp_name!r}")
    profile = raw.get("profile", "tiny")
    if profile not in PROFILES:
        raise SpecError(f"{where}.profile: {profile!r} is not one of {', '.join(PROFILES)}")
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"{where}.seeds must be a non-empty list of integers >= 0")
    seeds = tuple(_positive_int(f"{where}.seeds[{i}]", s, allow_zero=True) for i, s in enumerate(seeds))
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"{where}.seeds repeat: {list(seeds)}")
    dets = _names(f"{where}.detectors", raw["detectors"], detectors)
    overrides_raw = raw.get("overrides") or {}
    if not isinstance(overrides_raw, Mapping):
        raise SpecError(f"{where}.overrides must map detector names to {{schedule, launch, backbone_init}}")
    overrides = {}
    for det, over in overrides_raw.items():
        if det not in detectors:
            raise SpecError(f"{where}.overrides: unknown detector {det!r}{_suggest(det, detectors)}")
        if not isinstance(over, Mapping):
            raise SpecError(f"{where}.overrides.{det} must be a mapping with keys {', '.join(OVERRIDE_KEYS)}")
        _check_keys(f"{where}.overrides.{det}", over, OVERRIDE_KEYS)
        overrides[det] = {
            "schedule": _schedule(f"{where}.overrides.{det}.schedule", over.get("schedule")),
            "launch": _launch(f"{where}.overrides.{det}.launch", over.get("launch")),
        }
        if "backbone_init" in over:
            overrides[det]["backbone_init"] = _backbone_init(f"{where}.overrides.{det}.backbone_init",
                                                             over["backbone_init"], profile,
                                                             path.parent if path else None)
    launch = {**LAUNCH_KEYS, **_launch(f"{where}.launch", raw.get("launch"))}
    for det in dets:
        merged = {**launch, **overrides.get(det, {}).get("launch", {})}
        at = f"{where}.overrides.{det}.launch" if overrides.get(det, {}).get("launch") else f"{where}.launch"
        _check_tasks(at, merged)
    datasets = _datasets(f"{where}.dataset", raw.get("dataset", "synthetic"), path.parent if path else None)
    left_out, notes = _mask_detectors_left_out(where, datasets, dets, raw["detectors"] == "all")
    spec = Spec(
        name=exp_name,
        path=path,
        description=str(raw.get("description", "")),
        datasets=datasets,
        profile=profile,
        detectors=dets,
        left_out=left_out,
        notes=notes,
        losses=_names(f"{where}.losses", raw["losses"], valid_losses, every=_comparison_losses(valid_losses)),
        seeds=seeds,
        schedule={**SCHEDULE_KEYS, **_schedule(f"{where}.schedule", raw.get("schedule"))},
        launch=launch,
        overrides=overrides,
        loss_modules=tuple(loss_modules),
        origin=origin,
        backbone_init=_backbone_init(f"{where}.backbone_init", raw.get("backbone_init"), profile,
                                     path.parent if path else None),
    )
    spec.runs()  # every cell's batch resolves (accumulate auto needs a recipe total that splits)
    return spec


BACKBONE_INITS = ("imagenet", "scratch")
DEFAULT_BACKBONE_INIT = {"paper": "imagenet", "tiny": "scratch"}


def _backbone_init(where: str, value: Any, profile: str, base: Path | None = None) -> str:
    """``imagenet``, ``scratch`` or a checkpoint (a URL, or a path: a relative one is read from ``base``,
    the spec file's folder, as its other paths are, and made absolute); ``None``: the profile's default."""
    if value is None:
        return DEFAULT_BACKBONE_INIT[profile]
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where} must be {' or '.join(BACKBONE_INITS)} or a checkpoint path, got {value!r}")
    if value == "imagenet" and profile == "tiny":
        raise SpecError(f"{where}: imagenet needs the paper profile (the tiny profile's quarter-width ResNet-18 "
                        f"has no ImageNet checkpoint); use scratch or a checkpoint path")
    if value not in BACKBONE_INITS and "://" not in value and base is not None and not Path(value).expanduser().is_absolute():
        return os.path.abspath(base / value)
    return value


def load_spec(path: str | Path, detectors: list[str] | None = None) -> Spec:
    """Read and validate ``path``; :class:`SpecError` with one clear line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec {path} does not exist; specs live in experiments/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if detectors is None:
        from harness.detectors.grid import DETECTOR_NAMES

        detectors = list(DETECTOR_NAMES)
    return parse_spec(raw, name=path.stem, path=path, detectors=detectors, losses_loader=_load_losses)


def _comparison_losses(valid: list[str]) -> list[str]:
    """What ``losses: all`` means: the five losses of the comparison (CE, Focal, AP, aLRP, RS). Other
    registered losses (the Bucketed comparators, a user's own) run where a spec names them."""
    from harness.detectors.grid import LOSS_NAMES

    return [n for n in LOSS_NAMES if n in valid] or list(valid)


def _load_losses(modules: list[str], origin: str = "") -> list[str]:
    """The valid loss names once the spec's loss modules are imported (relative paths from ``origin``,
    the spec file's folder)."""
    from harness.losses import loss_names

    try:
        import_loss_modules(modules, origin)
    except ImportError as exc:
        raise SpecError(f"loss_modules: {exc}") from None
    return loss_names()


def import_loss_modules(modules: Iterable[str], origin: str = "") -> None:
    """Import a run's external loss modules in this process (every process that builds or trains a cell
    calls this: the driver when it loads the spec, each job and each task of a multi-process run).
    Relative ``.py`` paths are read from ``origin``, the folder the spec was loaded from. Raises
    ``ImportError`` naming the module and why it cannot be imported here."""
    from harness.losses.registry import LossModuleError, import_loss_module

    for m in modules:
        target = m
        if m.endswith(".py") and not Path(m).is_absolute() and origin:
            target = str(Path(origin) / m)
        try:
            import_loss_module(target)
        except LossModuleError as exc:
            if exc.missing and target.endswith(".py"):
                raise ImportError(f"loss module {m} cannot be imported here: no file {Path(target).absolute()} "
                                  f"(a relative path is read from the spec file's folder)") from None
            if exc.missing:
                raise ImportError(f"loss module {m} cannot be imported here: no module {m!r} on the import path; "
                                  f"put its folder on PYTHONPATH or give a .py path") from None
            raise ImportError(f"loss module {m} cannot be imported here: {exc}") from None
