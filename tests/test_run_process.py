"""What a process that trains run after run (a rehearsal job, a local run forked from a preloaded server)
needs: each run stops its data loaders' worker processes as soon as it is done with them, not in some
later garbage collection (where torch waits 5 s for each worker before killing it); and the imported
stack is kept out of the collections mmengine's datasets ask for."""

from __future__ import annotations

import gc
import subprocess
import sys
import types

import torch

from harness.run.job import freeze_imported
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


FREEZE = """
import gc, sys, weakref
from harness.run.job import freeze_imported
class Node: pass
assert "colorsys" not in sys.modules
node = Node(); node.me = node  # a cycle no one will hold
alive = weakref.ref(node)
del node
before = len(gc.get_objects())
freeze_imported("colorsys"{collect})
print("colorsys" in sys.modules, before > 10000, len(gc.get_objects()) < 100, alive() is not None)
"""


def test_freezing_imports_the_modules_and_leaves_only_newer_objects_to_collect():
    for collect, garbage_kept in (("", "False"), (", collect=False", "True")):  # collect=False freezes garbage too
        out = subprocess.run([sys.executable, "-c", FREEZE.format(collect=collect)], capture_output=True, text=True,
                             check=True).stdout.split()
        assert out == ["True", "True", "True", garbage_kept], (collect, out)
