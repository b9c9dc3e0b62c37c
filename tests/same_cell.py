"""Shared check of the tests that swap a cell's module for a faster one with the same values: two models
(built from the same seed) trained three steps on one batch end with equal weights and predict the same
boxes, scores and labels, bit for bit."""

from __future__ import annotations

import torch

from harness.detectors.check import train_step


def assert_train_and_predict_the_same(first, second, batch) -> None:
    """``first`` and ``second``: ``(model, optim_wrapper)`` pairs."""
    for model, opt in (first, second):
        model.train()
        torch.manual_seed(1)  # the same draws for both (CE and Focal cells sample RoIs at random)
        for _ in range(3):
            train_step(model, batch, opt)
    for (name, a), b in zip(first[0].state_dict().items(), second[0].state_dict().values()):
        assert torch.equal(a, b), name
    outputs = []
    for model, _ in (first, second):
        model.eval()
        with torch.no_grad():
            data = model.data_preprocessor(batch, False)
            outputs.append([s.pred_instances for s in model(**data, mode="predict")])
    for a, b in zip(*outputs):
        assert torch.equal(a.bboxes, b.bboxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
