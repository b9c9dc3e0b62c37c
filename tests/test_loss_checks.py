"""`harness check-loss`'s loss-level checks pass the built-in losses and catch broken ones."""

from __future__ import annotations

import pytest
import torch

from harness.losses import ClassificationOutput, LossSpec, registry
from harness.losses.checks import check_finite, check_no_positives, check_rejects_nan, check_speed, run_loss_checks


@pytest.mark.parametrize("name", ["ce", "focal", "ap", "alrp", "rs", "bucketed_rs", "bucketed_ap"])
def test_builtin_losses_pass(name):
    results = run_loss_checks(name, speed_n=20_000, speed_p=100)
    # the speed check runs and reports; whether it passes depends on the machine's load (no timing asserts)
    assert all(r.ok for r in results if r.name != "speed"), [r for r in results if not r.ok]
    (speed,) = [r for r in results if r.name == "speed"]
    assert "vs Focal" in speed.detail


def _spec(fn, ranking=True):
    def classify(logits, targets, loc_errors=None):
        loss = fn(logits, targets)
        return ClassificationOutput(loss=loss, components={})

    return LossSpec(name="broken", summary="broken", fn=fn, classify=classify, targets="binary", ranking=ranking,
                    balancing="fixed")


def test_a_loss_that_returns_nan_instead_of_raising_fails():
    spec = _spec(lambda s, t: (s * (t > 0)).sum() / (t > 0).sum())  # 0/0 = NaN without positives
    assert not check_no_positives(spec).ok
    assert "instead of raising ValueError" in check_rejects_nan(spec).detail


def test_a_loss_whose_gradient_leaks_onto_ignored_entries_fails():
    spec = _spec(lambda s, t: torch.nn.functional.softplus(s).mean())
    result = check_finite(spec)
    assert not result.ok and "ignored entries" in result.detail


def test_a_slow_loss_fails_the_speed_check():
    import time

    def slow(s, t):
        time.sleep(0.05)
        return s.sum() * 0

    result = check_speed(_spec(slow), n=10_000, p=10, max_ratio=2.0)
    assert not result.ok and "over 2.0x" in result.detail
