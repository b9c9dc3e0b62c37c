"""A loss defined outside the package: Quality Focal Loss (Li et al., "Generalized Focal Loss", NeurIPS
2020), registered as ``qfl``. The worked example of README's "Adding a loss": name this file in a spec's
``loss_modules`` and ``qfl`` in its ``losses`` (see experiments/example_new_loss.yaml).

For logits ``s`` and targets ``t`` (0 negative, −1 ignored, ``y ∈ (0, 1]`` a positive's localisation
quality), with ``σ = sigmoid(s)`` and soft label ``y`` (0 for negatives):

    QFL = Σ_{valid k} |y_k − σ_k|^β · BCE(s_k, y_k) / max(#positives, 1),   β = 2.

It asks heads for quality targets (like RS), is pointwise (no batch-wide ranking) and keeps the recipe's
fixed localisation weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.losses import ClassificationOutput, LossSpec, register_loss, validate_inputs


def quality_focal_loss(logits: torch.Tensor, targets: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    validate_inputs(logits, targets, "quality_focal_loss")
    x = logits.reshape(-1).to(torch.promote_types(logits.dtype, torch.float32))
    t = targets.detach().reshape(-1).to(x.dtype)
    valid = (t >= 0).to(x.dtype)
    y = t.clamp(min=0.0)
    scale = (y - x.sigmoid()).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none") * scale * valid
    return loss.sum() / (t > 0).sum().clamp(min=1)


def _classify(logits, targets, loc_errors=None, beta=2.0):
    loss = quality_focal_loss(logits, targets, beta=beta)
    return ClassificationOutput(loss=loss, components={"qfl": loss.detach()})


register_loss(
    LossSpec(
        name="qfl",
        summary="Quality Focal Loss (Li et al., NeurIPS 2020), an example of an external loss",
        fn=quality_focal_loss,
        classify=_classify,
        targets="quality",
        ranking=False,
        balancing="fixed",
        defaults={"beta": 2.0},
        usage="per element; positives carry their IoU; localisation weights of the recipe",
        module=__name__,
    )
)
