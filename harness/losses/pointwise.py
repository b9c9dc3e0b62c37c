"""Pointwise classification losses: sigmoid cross-entropy and sigmoid Focal Loss.

Both come from torch / torchvision; this module only adapts them to the harness's target encoding
(0 negative, -1 ignored, > 0 positive) and normalisation, and registers them.

* ``cross_entropy_loss(logits, targets)``:
  ``Σ_{valid k} BCE(s_k, [t_k > 0]) / max(|P|, 1)`` with ``torch.nn.functional.binary_cross_entropy_with_logits``.
* ``focal_loss(logits, targets, alpha=0.25, gamma=2.0)``:
  ``Σ_{valid k} FL(s_k, [t_k > 0]) / max(|P|, 1)`` with ``torchvision.ops.sigmoid_focal_loss``
  (``FL = −α_t (1 − p_t)^γ log p_t``; torchvision's α = 0.25 default, as in RetinaNet / mmdet).

Ignored entries (t = −1) contribute nothing. Normalising by the number of positives matches how mmdet's
dense heads average these losses (``avg_factor`` = number of positives). Detector heads that are
standard mmdet heads take the ``mmdet`` config of the spec instead of calling these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.losses._ranking import validate_inputs
from harness.losses.registry import ClassificationOutput, LossSpec, register_loss


def _prepare(logits: Tensor, targets: Tensor, name: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    validate_inputs(logits, targets, name)
    x = logits.reshape(-1)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    t = targets.detach().reshape(-1)
    binary = (t > 0).to(x.dtype)
    valid = (t >= 0).to(x.dtype) if bool((t < 0).any()) else None
    num_pos = (t > 0).sum().clamp(min=1).to(x.dtype)
    return x, binary, valid, num_pos


def _reduce(elementwise: Tensor, valid: Tensor | None, num_pos: Tensor) -> Tensor:
    if valid is not None:
        elementwise = elementwise * valid
    return elementwise.sum() / num_pos


def cross_entropy_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Sigmoid binary cross-entropy summed over non-ignored entries, divided by max(#positives, 1)."""
    x, binary, valid, num_pos = _prepare(logits, targets, "cross_entropy_loss")
    return _reduce(F.binary_cross_entropy_with_logits(x, binary, reduction="none"), valid, num_pos)


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """torchvision's sigmoid Focal Loss summed over non-ignored entries, divided by max(#positives, 1)."""
    # imported here: importing torchvision (its models, torch._dynamo) would add seconds to every command
    # that only reads the loss registry, such as planning a spec
    from torchvision.ops import sigmoid_focal_loss

    x, binary, valid, num_pos = _prepare(logits, targets, "focal_loss")
    return _reduce(sigmoid_focal_loss(x, binary, alpha=alpha, gamma=gamma, reduction="none"), valid, num_pos)


def _classify_ce(logits, targets, loc_errors=None):
    loss = cross_entropy_loss(logits, targets)
    return ClassificationOutput(loss=loss, components={"ce": loss.detach()})


def _classify_focal(logits, targets, loc_errors=None, alpha=0.25, gamma=2.0):
    loss = focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    return ClassificationOutput(loss=loss, components={"focal": loss.detach()})


register_loss(
    LossSpec(
        name="ce",
        summary="cross-entropy (sigmoid BCE here; R-CNN heads keep mmdet's softmax CE with sampling)",
        fn=cross_entropy_loss,
        classify=_classify_ce,
        targets="binary",
        ranking=False,
        balancing="fixed",
        mmdet={"type": "CrossEntropyLoss", "use_sigmoid": True, "loss_weight": 1.0},
        usage="per element; positives 1; localisation weights of the recipe",
        module=__name__,
    )
)
register_loss(
    LossSpec(
        name="focal",
        summary="sigmoid Focal Loss (torchvision), alpha 0.25, gamma 2",
        fn=focal_loss,
        classify=_classify_focal,
        targets="binary",
        ranking=False,
        balancing="fixed",
        defaults={"alpha": 0.25, "gamma": 2.0},
        mmdet={"type": "FocalLoss", "use_sigmoid": True, "gamma": 2.0, "alpha": 0.25, "loss_weight": 1.0},
        usage="per element; positives 1; localisation weights of the recipe",
        module=__name__,
    )
)
