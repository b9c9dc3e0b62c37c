"""Generic checks any registered loss must pass (``harness check-loss NAME``).

Each check returns a :class:`CheckResult`; none raises. The loss-level checks are pure torch:

* ``finite``: value and gradient finite on a random batch with ignored entries, and the gradient
  reaches the logits;
* ``no_positives``: with no positives (and with everything ignored) the value and gradient are finite;
  ranking losses must give exactly zero;
* ``rejects_nan``: a NaN logit raises ``ValueError`` rather than returning NaN;
* ``speed``: forward + backward time beside Focal on the same logits (informational; fails only when
  more than ``max_ratio`` × Focal).

The detector check (one training step of every detector with this loss) lives in
:func:`harness.detectors.check_cell` and is run by the command.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from harness.losses.registry import LossSpec, get_loss


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str


def _batch(spec: LossSpec, n: int = 20_000, p: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g) * 2
    targets = torch.zeros(n)
    perm = torch.randperm(n, generator=g)
    quality = torch.rand(p, generator=g) * 0.9 + 0.1
    targets[perm[:p]] = quality if spec.targets == "quality" else 1.0
    targets[perm[p : p + n // 20]] = -1
    loc = torch.rand(p, generator=g) * 2 if spec.uses_loc_errors else None
    return logits, targets, loc


def _call(spec: LossSpec, logits, targets, loc):
    if spec.uses_loc_errors and loc is not None:
        loc = loc[: int((targets > 0).sum())]
    return spec.classification(logits, targets, loc_errors=loc)


def check_finite(spec: LossSpec) -> CheckResult:
    logits, targets, loc = _batch(spec)
    x = logits.clone().requires_grad_(True)
    try:
        out = _call(spec, x, targets, loc)
        out.loss.backward()
    except Exception as exc:
        return CheckResult("finite", False, f"raised {type(exc).__name__}: {exc}")
    value = float(out.loss.detach())
    if not math.isfinite(value) or x.grad is None or not bool(torch.isfinite(x.grad).all()):
        return CheckResult("finite", False, f"value {value}, gradient finite: {x.grad is not None and bool(torch.isfinite(x.grad).all())}")
    if float(x.grad.abs().sum()) == 0:
        return CheckResult("finite", False, "the gradient does not reach the logits (all zero)")
    if float(x.grad[targets < 0].abs().sum()) != 0:
        return CheckResult("finite", False, "ignored entries (target -1) receive a gradient")
    return CheckResult("finite", True, f"value {value:.4f}; gradient finite, non-zero, zero on ignored entries")


def check_no_positives(spec: LossSpec) -> CheckResult:
    details = []
    for label, fill in (("no positives", 0.0), ("all ignored", -1.0)):
        x = torch.randn(1000).requires_grad_(True)
        t = torch.full((1000,), fill)
        loc = torch.zeros(0) if spec.uses_loc_errors else None
        try:
            out = _call(spec, x, t, loc)
            out.loss.backward()
        except Exception as exc:
            return CheckResult("no_positives", False, f"{label}: raised {type(exc).__name__}: {exc}")
        value = float(out.loss.detach())
        finite = math.isfinite(value) and bool(torch.isfinite(x.grad).all())
        if not finite:
            return CheckResult("no_positives", False, f"{label}: value {value}, non-finite gradient")
        if spec.ranking and (value != 0 or float(x.grad.abs().sum()) != 0):
            return CheckResult("no_positives", False, f"{label}: a ranking loss must give 0 and a zero gradient, got {value}")
        details.append(f"{label}: {value:g}")
    return CheckResult("no_positives", True, "; ".join(details))


def check_rejects_nan(spec: LossSpec) -> CheckResult:
    logits, targets, loc = _batch(spec, n=500, p=10)
    logits[3] = float("nan")
    try:
        out = _call(spec, logits, targets, loc)
    except ValueError as exc:
        return CheckResult("rejects_nan", True, f"ValueError: {exc}")
    except Exception as exc:
        return CheckResult("rejects_nan", False, f"raised {type(exc).__name__} instead of ValueError: {exc}")
    return CheckResult("rejects_nan", False, f"returned {float(out.loss.detach())} for a NaN logit instead of raising ValueError")


def _median_ms(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def check_speed(spec: LossSpec, n: int = 1_000_000, p: int = 1_000, max_ratio: float = 20.0) -> CheckResult:
    logits, targets, loc = _batch(spec, n=n, p=p)
    focal = get_loss("focal")

    def step(s):
        x = logits.clone().requires_grad_(True)
        _call(s, x, targets, loc).loss.backward()

    try:
        ours = _median_ms(lambda: step(spec))
    except Exception as exc:
        return CheckResult("speed", False, f"raised {type(exc).__name__}: {exc}")
    base = _median_ms(lambda: step(focal))
    ratio = ours / base
    detail = f"{ours:.1f} ms vs Focal {base:.1f} ms ({ratio:.2f}x) on N={n:,}, P={p:,}, forward + backward"
    return CheckResult("speed", ratio <= max_ratio, detail + ("" if ratio <= max_ratio else f": over {max_ratio}x"))


def run_loss_checks(name: str, speed_n: int = 1_000_000, speed_p: int = 1_000) -> list[CheckResult]:
    spec = get_loss(name)
    return [check_finite(spec), check_no_positives(spec), check_rejects_nan(spec), check_speed(spec, speed_n, speed_p)]
