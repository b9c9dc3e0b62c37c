"""The backbone checkpoints a spec's runs start from, and whether this machine has them.

A paper cell starts from the recipe's ImageNet backbone (``backbone_init: imagenet``): mmengine loads
``torchvision://resnet50`` (``resnet34`` for SOLOv2-light) through its ``Pretrained`` init, which reads
torch's hub cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) and
downloads into it when the file is missing. Compute nodes often cannot download, so a run checks first
(:func:`missing_for_run`, called before training) and fails with one line saying how to pre-fetch; on a
login node ``harness weights SPEC`` fetches what the spec needs (:func:`fetch`). A ``backbone_init`` that
is a path names a checkpoint file the user provides. :func:`missing_weights` lists, one line per
checkpoint, what a spec needs and this machine lacks, or has only a corrupt copy of: a ``torchvision://``
file's name carries the first hex digits of its sha256 (``resnet50-0676ba61.pth``, torch.hub's
convention), which the file's bytes must match.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

TORCHVISION = "torchvision://"


class WeightsError(RuntimeError):
    """A checkpoint cannot be fetched (the message names the URL and the target path)."""


def checkpoint_for(detector: str, profile: str, backbone_init: str | None) -> str | None:
    """The checkpoint a cell's backbone loads: ``torchvision://NAME`` (ImageNet), a file path, or
    ``None`` (from scratch)."""
    from harness.detectors.builder import resolve_backbone_init
    from harness.detectors.grid import get_detector

    init = resolve_backbone_init(backbone_init, profile)
    if init == "scratch":
        return None
    if init == "imagenet":
        return get_detector(detector).checkpoint
    return init


def hub_checkpoint_dir() -> Path:
    """torch's hub cache of checkpoints, where mmengine's ``torchvision://`` loader reads and downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_url(checkpoint: str) -> str:
    """The download URL mmengine resolves ``torchvision://NAME`` to (its own table)."""
    from mmengine.runner.checkpoint import get_torchvision_models

    name = checkpoint[len(TORCHVISION):]
    urls = get_torchvision_models()
    if name not in urls:
        raise WeightsError(f"{checkpoint}: torchvision has no checkpoint named {name!r}")
    return urls[name]


@dataclass(frozen=True)
class Needed:
    checkpoint: str  # torchvision://NAME or a path
    runs: tuple[str, ...]  # "detector x loss" of the runs that need it

    @property
    def is_torchvision(self) -> bool:
        return self.checkpoint.startswith(TORCHVISION)

    @property
    def local_path(self) -> Path:
        if self.is_torchvision:
            return hub_checkpoint_dir() / os.path.basename(torchvision_url(self.checkpoint))
        return Path(self.checkpoint).expanduser()

    def present(self) -> bool:
        """Whether a file is at :attr:`local_path` (whole or not: see :meth:`problem`)."""
        return self.local_path.is_file()

    def hash_mismatch(self) -> tuple[str, str] | None:
        """(expected, actual) hash prefix when the file is a ``torchvision://`` checkpoint whose sha256
        does not start with the hex digits its name carries (a truncated or corrupt file), else None."""
        if not self.is_torchvision:
            return None
        import torch

        path = self.local_path
        match = torch.hub.HASH_REGEX.search(path.name)
        if not match:
            return None
        from harness.files import file_sha256

        expected = match.group(1)
        actual = file_sha256(path)[:len(expected)]
        return None if actual == expected else (expected, actual)

    def problem(self, spec_path: str | None = None) -> str | None:
        """Why this checkpoint is not usable here, in one line saying how to fix it (missing, or a
        corrupt ``torchvision://`` file); None when it is usable. Hashes the file (once per process)."""
        if not self.present():
            return self.how_to_fetch(spec_path)
        cmd = f"harness weights {spec_path}" if spec_path else "harness weights"
        try:
            mismatch = self.hash_mismatch()
        except OSError as exc:
            return f"{self.checkpoint} ({_who(self.runs)}): cannot read {self.local_path} ({exc.strerror or exc}): " \
                   f"make it readable, or delete it and fetch it again (`{cmd}`)"
        if mismatch is None:
            return None
        return (f"{self.checkpoint} ({_who(self.runs)}): {self.local_path} is corrupt or incomplete (its sha256 "
                f"starts {mismatch[1]}, its name says {mismatch[0]}): delete it and fetch it again (`{cmd}`)")

    def how_to_fetch(self, spec_path: str | None = None) -> str:
        who = _who(self.runs)
        if self.is_torchvision:
            cmd = f"harness weights {spec_path}" if spec_path else "harness weights"
            return (f"{self.checkpoint} ({who}) is not in torch's cache {self.local_path}: run `{cmd}` on a "
                    f"machine with internet and the same TORCH_HOME, or download {torchvision_url(self.checkpoint)} "
                    f"to that path")
        return f"backbone checkpoint {self.checkpoint} ({who}) does not exist: put the file there (backbone_init)"


def _who(runs: tuple[str, ...]) -> str:
    shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    return f"needed by {shown}"


def needed(runs) -> list[Needed]:
    """The checkpoints ``runs`` (RunSpecs) start from, each with the runs that need it (scratch: none)."""
    by: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        ckpt = checkpoint_for(run.detector, run.profile, getattr(run, "backbone_init", None))
        if ckpt:
            label = f"{run.detector} x {run.loss}"
            if label not in by[ckpt]:
                by[ckpt].append(label)
    return [Needed(c, tuple(r)) for c, r in by.items()]


def missing_weights(spec) -> list[str]:
    """One line per checkpoint ``spec``'s runs need that is not usable on this machine (missing, or a
    ``torchvision://`` file that does not match its name's hash: every run would fail at its start), saying
    how to fix it; empty when all are usable or every run trains from scratch. Hashes each file present
    (about 0.3 s for ResNet-50's 100 MB, once per process)."""
    path = str(spec.path) if getattr(spec, "path", None) else None
    return [line for line in (n.problem(path) for n in needed(spec.runs())) if line]


def missing_for_run(run) -> str | None:
    """The one line saying how to pre-fetch the checkpoint ``run`` needs when it is missing here, else
    ``None``. Called before training: a compute node that cannot download fails the run with it. Only
    whether the file is there: a corrupt one fails when it is loaded, and the pre-launch checks
    (:func:`missing_weights`) hash it; a rehearsal's random stand-ins carry torchvision's names."""
    for n in needed([run]):
        if not n.present():
            return n.how_to_fetch()
    return None


def fetch(item: Needed, progress: bool = False) -> Path:
    """Download a ``torchvision://`` checkpoint into torch's hub cache (checking the hash its file name
    carries); returns its path. WeightsError (one line) when it cannot."""
    if not item.is_torchvision:
        raise WeightsError(item.how_to_fetch())
    import torch

    target = item.local_path
    if target.is_file():
        return target
    url = torchvision_url(item.checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(target.name)
    try:
        torch.hub.download_url_to_file(url, str(target), match.group(1) if match else None, progress=progress)
    except Exception as exc:  # network, disk, hash
        raise WeightsError(f"cannot download {url} to {target}: {type(exc).__name__}: {exc}") from None
    return target


def paper_checkpoints() -> list[Needed]:
    """Every ImageNet checkpoint of the grid's paper profile (what ``harness weights`` without a spec fetches)."""
    from harness.detectors.grid import DETECTOR_NAMES, get_detector

    by: dict[str, list[str]] = defaultdict(list)
    for d in DETECTOR_NAMES:
        by[get_detector(d).checkpoint].append(d)
    return [Needed(c, tuple(r)) for c, r in by.items()]


__all__ = ["Needed", "WeightsError", "checkpoint_for", "fetch", "hub_checkpoint_dir", "missing_for_run",
           "missing_weights", "needed", "paper_checkpoints", "torchvision_url"]
