"""The 7 × 5 grid: seven mmdet 3.x detectors, each trainable with every registered loss.

Light to import (no torch, no mmdet): the heavy parts load when used.

* :mod:`harness.detectors.grid`: the detectors, their recipes and the grid table (data);
* :mod:`harness.detectors.builder`: :func:`build_cell_config` (mmdet's config + documented changes);
* :mod:`harness.detectors.plugin`: registers the mmdet modules (:mod:`~harness.detectors.head_loss`,
  :mod:`~harness.detectors.dense_heads`, :mod:`~harness.detectors.roi_heads`, :mod:`~harness.detectors.hooks`);
* :mod:`harness.detectors.check`: :func:`check_cell` (one training and one inference step on CPU);
* :mod:`harness.detectors.bench_steps`: :func:`run_step_benchmark` (median training-step time per cell).

Typical use by the run code::

    cfg = build_cell_config("atss", "rs", classes=paths.classes, num_classes=paths.num_classes, profile="tiny")
    cfg.train_dataloader.dataset = paths.mmdet_dataset("train", cfg.train_pipeline)
    Runner.from_cfg(cfg).train()
"""

from __future__ import annotations

from harness.detectors.grid import (
    DETECTOR_NAMES,
    DETECTORS,
    LOSS_NAMES,
    LOSS_TITLES,
    PROFILES,
    cell_recipe,
    describe_cell,
    detector_names,
    get_detector,
    grid,
    grid_markdown,
    head_family,
)


def cells(losses=None) -> list[tuple[str, str]]:
    """Every (detector, loss) cell, detector-major."""
    return [(d, loss) for d in DETECTOR_NAMES for loss in (tuple(losses) if losses else LOSS_NAMES)]


def build_cell_config(detector, loss, **kwargs):
    """See :func:`harness.detectors.builder.build_cell_config`."""
    from harness.detectors.builder import build_cell_config as build

    return build(detector, loss, **kwargs)


def cell_changes(detector, loss, **kwargs):
    """See :func:`harness.detectors.builder.cell_changes`."""
    from harness.detectors.builder import cell_changes as changes

    return changes(detector, loss, **kwargs)


def check_cell(detector, loss, **kwargs):
    """See :func:`harness.detectors.check.check_cell`."""
    from harness.detectors.check import check_cell as check

    return check(detector, loss, **kwargs)


__all__ = [
    "DETECTORS",
    "DETECTOR_NAMES",
    "LOSS_NAMES",
    "LOSS_TITLES",
    "PROFILES",
    "build_cell_config",
    "cell_changes",
    "cell_recipe",
    "cells",
    "check_cell",
    "describe_cell",
    "detector_names",
    "get_detector",
    "grid",
    "grid_markdown",
    "head_family",
]
