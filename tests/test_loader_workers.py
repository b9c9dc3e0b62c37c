"""A run stops its data loaders' worker processes as soon as it is done with them, not in some later
garbage collection (where torch waits 5 s for each worker before killing it: a process that goes on to
another run, a rehearsal job or a local pool, paid that on every run)."""

from __future__ import annotations

import gc
import types

import torch

from harness.run.train import stop_loader_workers


class Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i])


def test_persistent_workers_of_every_built_loop_stop_at_once_and_unbuilt_loops_are_left_alone():
    train = torch.utils.data.DataLoader(Numbers(), batch_size=1, num_workers=2, persistent_workers=True)
    test = torch.utils.data.DataLoader(Numbers(), batch_size=1, num_workers=1, persistent_workers=True)
    next(iter(train))  # an epoch left unfinished, as a run with max_iters_per_epoch leaves it
    list(test)
    workers = train._iterator._workers + test._iterator._workers
    assert all(w.is_alive() for w in workers)
    runner = types.SimpleNamespace(_train_loop=types.SimpleNamespace(dataloader=train),
                                   _val_loop={"type": "ValLoop"},  # not built: a config dict
                                   _test_loop=types.SimpleNamespace(dataloader=test))
    gc.disable()  # nothing but the call may stop them
    try:
        stop_loader_workers(runner)
        assert not any(w.is_alive() for w in workers)
    finally:
        gc.enable()
    assert train._iterator is None and test._iterator is None
    stop_loader_workers(runner)  # stopped already: nothing to do
    no_workers = torch.utils.data.DataLoader(Numbers(), batch_size=4)
    next(iter(no_workers))
    stop_loader_workers(types.SimpleNamespace(_train_loop=types.SimpleNamespace(dataloader=no_workers),
                                              _val_loop=None, _test_loop=None))
    assert list(no_workers)[0].tolist() == [[0], [1], [2], [3]]
