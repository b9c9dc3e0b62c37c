"""CachedAnchorGenerator (the tiny profile's): mmdet's anchors and valid flags, computed once per shape.

A cell trained and tested with it computes what it computes with mmdet's AnchorGenerator, bit for bit;
the cache gives the tensors a fresh computation gives for every feature-map size, padded shape and
dtype it is asked for, a new list each time, and stays bounded.
"""

from __future__ import annotations

import pytest
import torch

from harness.detectors.builder import TINY_BATCH, TINY_SIZE, build_cell_config, get_path, walk_keys
from harness.detectors.check import CHECK_CLASSES, build_model, sgd_wrapper, synthetic_batch
from same_cell import assert_train_and_predict_the_same

ANCHOR_CELLS = [("faster_rcnn", "rs"), ("cascade_rcnn", "ce"), ("mask_rcnn", "ap"), ("atss", "focal"),
                ("paa", "rs"), ("yolact", "alrp")]


def _generator_paths(cfg) -> list[str]:
    return [p for p in walk_keys(cfg.model, "anchor_generator") if get_path(cfg.model, f"{p}.type")]


def _model(detector: str, loss: str, cached: bool):
    torch.manual_seed(0)
    cfg = build_cell_config(detector, loss, classes=CHECK_CLASSES, profile="tiny")
    paths = _generator_paths(cfg)
    assert paths and all(get_path(cfg.model, f"{p}.type") == "CachedAnchorGenerator" for p in paths)
    if not cached:
        for path in paths:
            get_path(cfg.model, path)["type"] = "AnchorGenerator"
    model = build_model(cfg)
    return model, sgd_wrapper(model, cfg.optim_wrapper.optimizer.lr)


@pytest.mark.parametrize("detector,loss", ANCHOR_CELLS)
def test_a_cell_trains_and_predicts_the_same_with_cached_anchors(detector, loss):
    batch = synthetic_batch(num_images=TINY_BATCH, size=TINY_SIZE, num_classes=len(CHECK_CLASSES))
    assert_train_and_predict_the_same(_model(detector, loss, True), _model(detector, loss, False), batch)


def test_the_cache_gives_fresh_values_for_every_shape_and_stays_bounded():
    from mmdet.models.task_modules.prior_generators import AnchorGenerator

    from harness.detectors import anchors

    args = dict(strides=[4, 8, 16], ratios=[0.5, 1.0, 2.0], scales=[8])
    cached, plain = anchors.CachedAnchorGenerator(**args), AnchorGenerator(**args)
    shapes = [[(32, 32), (16, 16), (8, 8)], [(25, 38), (13, 19), (7, 10)]]
    for _ in range(2):  # the second round is answered from the cache
        for sizes in shapes:
            for dtype in (torch.float32, torch.float64):
                got, want = cached.grid_priors(sizes, dtype=dtype, device="cpu"), plain.grid_priors(sizes, dtype=dtype, device="cpu")
                assert all(g.dtype == dtype and torch.equal(g, w) for g, w in zip(got, want))
            for pad in ((128, 128), (100, 150, 3), (97, 150)):
                got, want = cached.valid_flags(sizes, pad, device="cpu"), plain.valid_flags(sizes, pad, device="cpu")
                assert all(torch.equal(g, w) for g, w in zip(got, want))
    first = cached.grid_priors(shapes[0], device="cpu")
    again = cached.grid_priors([torch.Size(s) for s in shapes[0]], device="cpu")  # sizes as the heads give them
    assert again is not first and all(a is b for a, b in zip(again, first))  # a new list of the same tensors
    for side in range(anchors.CACHE_SIZE + 10):
        cached.valid_flags([(side + 4, side + 4), (side + 2, side + 2), (side + 1, side + 1)], (4 * side + 16,) * 2,
                           device="cpu")
    assert len(cached._cache) == anchors.CACHE_SIZE
