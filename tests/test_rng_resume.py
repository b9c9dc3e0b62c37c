"""A checkpoint holds every random number generator's state (python, numpy, torch on the CPU and on every
CUDA device) and cudnn's flags, and resuming restores them. On CPU the CUDA calls are stand-ins that
record what was saved and set (the same code path a GPU run takes)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from harness.run.hooks import RNGStateHook, restore_rng_state, rng_state


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


class Runner:
    def __init__(self):
        self.warnings = []
        self.logger = self

    def warning(self, line):
        self.warnings.append(line)


class FakeCuda:
    """Two CUDA devices whose generator states are byte tensors, as torch's."""

    def __init__(self, monkeypatch, devices=2):
        self.states = [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(devices)]
        self.set_calls = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)

    def set_rng_state(self, state, device):
        self.set_calls.append(device)
        self.states[device] = state.clone()


@pytest.fixture
def cudnn_flags():
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def checkpoint_round_trip(checkpoint: dict) -> dict:
    """What a resumed run reads back: the checkpoint through torch.save / torch.load as mmengine does."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_resume_continues_the_cpu_generators_where_the_checkpoint_left_them(cudnn_flags):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(Runner(), checkpoint)
    expected = draws()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # the process dies; a new one starts elsewhere
    assert draws() != expected
    RNGStateHook().after_load_checkpoint(Runner(), checkpoint_round_trip(checkpoint))
    assert draws() == expected


def test_cudnn_flags_are_saved_and_restored(cudnn_flags):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(Runner(), checkpoint)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    RNGStateHook().after_load_checkpoint(Runner(), checkpoint_round_trip(checkpoint))
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)


def test_every_cuda_devices_state_is_saved_and_restored(monkeypatch, cudnn_flags):
    cuda = FakeCuda(monkeypatch)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(Runner(), checkpoint)
    assert [bool((s == 10 + i).all()) for i, s in enumerate(checkpoint["harness_rng"]["cuda"])] == [True, True]
    cuda.states = [torch.zeros(16, dtype=torch.uint8) for _ in cuda.states]  # the devices moved on
    runner = Runner()
    RNGStateHook().after_load_checkpoint(runner, checkpoint_round_trip(checkpoint))
    assert cuda.set_calls == [0, 1]
    assert [int(s[0]) for s in cuda.states] == [10, 11] and not runner.warnings


def test_a_different_number_of_devices_restores_those_both_have_and_says_so(monkeypatch, cudnn_flags):
    FakeCuda(monkeypatch, devices=2)
    state = rng_state()
    fewer = FakeCuda(monkeypatch, devices=1)
    said = []
    restore_rng_state(state, log=said.append)
    assert fewer.set_calls == [0] and int(fewer.states[0][0]) == 10
    assert said == ["the checkpoint holds the RNG states of 2 CUDA device(s), this process sees 1: restoring the first 1"]


def test_a_cpu_only_checkpoint_has_no_cuda_states_and_a_gpu_one_resumes_on_cpu(monkeypatch, cudnn_flags):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "cuda" not in rng_state()
    state = {**rng_state(), "cuda": [torch.zeros(16, dtype=torch.uint8)]}
    said = []
    restore_rng_state(state, log=said.append)  # no CUDA call on a machine without CUDA
    assert said == ["the checkpoint holds the RNG states of 1 CUDA device(s) and CUDA is not available here"]
