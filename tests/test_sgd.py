"""SGD's update on a CPU through the harness's C kernel (harness/detectors/sgd.py): torch's values bit for bit,
taken only where it computes exactly as torch, and what a run records."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.optim.sgd as torch_sgd

from harness.detectors import native, sgd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the vector loops' lengths and their tails: 1..40 covers every remainder of 8 and 16 lanes (twice)
SIZES = list(range(1, 41)) + [63, 64, 65, 127, 1000, 4607, 65539]

needs_kernel = pytest.mark.skipif(sgd._library() is None, reason="no AVX2 or no C compiler: torch's own update runs")


@pytest.fixture
def installed():
    sgd.install()
    yield
    sgd.uninstall()


def _tensors(dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=gen, dtype=dtype) for n in SIZES]
    grads = [torch.randn(n, generator=gen, dtype=dtype) * 1e-2 for n in SIZES]
    buffers = [torch.randn(n, generator=gen, dtype=dtype) * 1e-2 for n in SIZES]
    return params, grads, buffers


def _update(function, params, grads, buffers, **hyper):
    settings = dict(weight_decay=1e-4, momentum=0.9, lr=0.0123, dampening=0.0, nesterov=False, maximize=False,
                    has_sparse_grad=False)
    settings.update(hyper)
    with torch.no_grad():
        function(params, grads, buffers, None, None, **settings)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hyper", [{}, {"weight_decay": 0.0}, {"weight_decay": 5e-4, "momentum": 0.95, "lr": 2e-2},
                                   {"lr": 3}])
def test_kernel_equals_torchs_update_bit_for_bit(installed, dtype, hyper):
    """Three steps in a row: parameters and momentum buffers equal torch's own function's by torch.equal."""
    params, grads, buffers = _tensors(dtype, 0)
    ours = ([p.clone() for p in params], [b.clone() for b in buffers])
    theirs = ([p.clone() for p in params], [b.clone() for b in buffers])
    before = sgd.fast_updates
    for step in range(3):
        step_grads = [g * (step + 1) for g in grads]
        _update(sgd.single_tensor_sgd, ours[0], [g.clone() for g in step_grads], ours[1], **hyper)
        _update(sgd._TORCH[0], theirs[0], [g.clone() for g in step_grads], theirs[1], **hyper)
        for n, a, b in zip(SIZES, ours[0] + ours[1], theirs[0] + theirs[1]):
            assert torch.equal(a, b), f"{dtype} size {n} step {step}: {(a - b).abs().max().item()}"
    assert sgd.fast_updates == before + 3  # the kernel did them, not torch's function
    assert not torch.equal(ours[0][-1], params[-1])  # and they moved the parameters


@needs_kernel
@pytest.mark.parametrize("case", ["nesterov", "dampening", "maximize", "no_momentum", "first_step", "strided",
                                  "half", "mixed", "lr_tensor", "grad_enabled", "scaled"])
def test_what_the_kernel_does_not_compute_runs_torchs_update(installed, case):
    """Each case the kernel would not compute exactly as torch goes to torch's own function (the counter does
    not move) and gives its values."""
    dtype = torch.float16 if case == "half" else torch.float32
    params, grads, buffers = _tensors(dtype, 1)
    hyper: dict = {}
    if case in ("nesterov", "maximize"):
        hyper[case] = True
    elif case == "dampening":
        hyper["dampening"] = 0.1
    elif case == "no_momentum":
        hyper["momentum"] = 0.0
    elif case == "first_step":
        buffers[3] = None
    elif case == "strided":
        params[5] = torch.randn(3, 2).t()  # dense but not contiguous: clones keep its strides
        grads[5], buffers[5] = grads[5].reshape(2, 3), buffers[5].reshape(2, 3)
    elif case == "mixed":
        grads[2] = grads[2].double()
    elif case == "lr_tensor":
        hyper["lr"] = torch.tensor(0.0123)
    ours = [p.clone() for p in params], [None if b is None else b.clone() for b in buffers]
    theirs = [p.clone() for p in params], [None if b is None else b.clone() for b in buffers]
    before = sgd.fast_updates
    if case == "grad_enabled":
        settings = dict(weight_decay=1e-4, momentum=0.9, lr=0.0123, dampening=0.0, nesterov=False, maximize=False,
                        has_sparse_grad=False)
        with torch.enable_grad():
            sgd.single_tensor_sgd(ours[0], [g.clone() for g in grads], ours[1], None, None, **settings)
            sgd._TORCH[0](theirs[0], [g.clone() for g in grads], theirs[1], None, None, **settings)
    elif case == "scaled":
        # torch's function refuses grad scaling on this path; so must ours, by handing it over
        with pytest.raises(AssertionError):
            sgd.single_tensor_sgd(ours[0], grads, ours[1], torch.tensor(1.0), None, weight_decay=0.0, momentum=0.9,
                                  lr=0.1, dampening=0.0, nesterov=False, maximize=False, has_sparse_grad=False)
        assert sgd.fast_updates == before
        return
    else:
        _update(sgd.single_tensor_sgd, ours[0], [g.clone() for g in grads], ours[1], **hyper)
        _update(sgd._TORCH[0], theirs[0], [g.clone() for g in grads], theirs[1], **hyper)
    assert sgd.fast_updates == before
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert torch.equal(a, b)


@needs_kernel
def test_torch_optim_sgd_trains_a_model_as_torch_does(installed):
    """torch.optim.SGD with the kernel installed (what a run's process has) and without: the same weights after
    training steps, float32, weight decay and momentum, two parameter groups."""

    def train(use_kernel: bool):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                    torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 5))
        groups = [{"params": model[0].parameters(), "weight_decay": 1e-4},
                  {"params": list(model[1].parameters()) + list(model[4].parameters()), "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
        data = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        if not use_kernel:
            sgd.uninstall()
        try:
            for _ in range(5):
                optimizer.zero_grad()
                model(data).square().mean().backward()
                optimizer.step()
        finally:
            sgd.install()
        return [p.detach().clone() for p in model.parameters()]

    before = sgd.fast_updates
    with_kernel = train(True)
    assert sgd.fast_updates == before + 8  # 2 groups x 4 steps after the first (torch's) step
    without = train(False)
    assert sgd.fast_updates == before + 8
    assert all(torch.equal(a, b) for a, b in zip(with_kernel, without))


def test_install_is_idempotent_and_reversible():
    original = torch_sgd._single_tensor_sgd
    sgd.install()
    sgd.install()
    try:
        assert torch_sgd._single_tensor_sgd is sgd.single_tensor_sgd and sgd._TORCH == [original]
    finally:
        sgd.uninstall()
    assert torch_sgd._single_tensor_sgd is original and sgd.cpu_sgd() == "torch's own update"


def test_a_run_records_which_update_ran():
    """A process that imported the plug-in (every run's) has the kernel where it builds, and the provenance
    line says so; with the C kernels off it keeps torch's own update and says why."""
    code = ("import harness.detectors.plugin, torch.optim.sgd as s\n"
            "from harness.detectors import sgd\n"
            "from harness.run.job import _cpu_sgd\n"
            "print(s._single_tensor_sgd is sgd.single_tensor_sgd, _cpu_sgd())")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = "harness C kernel (harness/detectors/sgd.c)" if sgd._library() is not None else "torch's own update"
    assert done.stdout.strip().startswith("True " + expected)
    off = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, native.ENV_DISABLE: "off"})
    assert off.returncode == 0, off.stderr
    assert off.stdout.strip() in ("True torch's own update (HARNESS_NATIVE=off)",
                                  "True torch's own update (this CPU has no AVX2: torch's own arithmetic differs there)")
