"""The loss library: exact, vectorised RS / aLRP / AP losses beside cross-entropy and Focal.

Pure torch (no mmdet), device-agnostic, float16/bfloat16 logits accepted (summed in float64). One
module per loss, its math in the module docstring:

* :mod:`harness.losses.rank_sort`: :func:`rank_sort_loss` → ``(ranking, sorting)`` with ``.total``;
* :mod:`harness.losses.alrp`: :func:`alrp_classification_loss`, :func:`alrp_localisation_loss`,
  :class:`SelfBalance`;
* :mod:`harness.losses.ap`: :func:`ap_loss`;
* :mod:`harness.losses.bucketed`: :func:`bucketed_rank_sort_loss`, :func:`bucketed_ap_loss` (Bucketed RS /
  AP, Yavuz et al., ECCV 2024: comparators, exact only at δ = 0);
* :mod:`harness.losses.pointwise`: :func:`cross_entropy_loss`, :func:`focal_loss` (torch/torchvision);
* :mod:`harness.losses.registry`: :data:`LOSSES`, :func:`get_loss`, :func:`register_loss`;
* :func:`validate_inputs`: the input checks every built-in loss runs (shapes, finite logits, targets in
  ``{-1, 0} ∪ (0, 1]``), for authors of new losses.

Every module of this package is imported here, so a new loss is one new file that calls
:func:`register_loss`.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from harness.losses._ranking import validate_inputs
from harness.losses.registry import (
    LOSSES,
    ClassificationOutput,
    LossSpec,
    get_loss,
    describe_load_error,
    load_loss_module,
    loss_names,
    register_loss,
)
from harness.losses.alrp import SelfBalance, alrp_classification_loss, alrp_localisation_loss
from harness.losses.ap import ap_loss
from harness.losses.bucketed import bucketed_ap_loss, bucketed_rank_sort_loss
from harness.losses.pointwise import cross_entropy_loss, focal_loss
from harness.losses.rank_sort import QUALITY_FLOOR, RankSortOutput, quality_targets, rank_sort_loss


def _discover() -> None:
    """Import every public module of this package (each registers its loss on import)."""
    for info in _pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            _importlib.import_module(f"{__name__}.{info.name}")


_discover()

__all__ = [
    "LOSSES",
    "ClassificationOutput",
    "LossSpec",
    "QUALITY_FLOOR",
    "RankSortOutput",
    "SelfBalance",
    "alrp_classification_loss",
    "alrp_localisation_loss",
    "ap_loss",
    "bucketed_ap_loss",
    "bucketed_rank_sort_loss",
    "cross_entropy_loss",
    "focal_loss",
    "get_loss",
    "describe_load_error",
    "load_loss_module",
    "loss_names",
    "quality_targets",
    "rank_sort_loss",
    "register_loss",
    "validate_inputs",
]
