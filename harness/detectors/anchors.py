"""Anchors computed once per feature-map size: ``type='CachedAnchorGenerator'`` (the tiny profile's).

mmdet's dense heads ask their ``AnchorGenerator`` for every level's anchors (``grid_priors``) at every
training iteration and every test image, and for every image's valid flags (``valid_flags``) at every
iteration: about 25 small tensor operations a level and image, for the same values each time, since
they depend only on the feature-map sizes (and the padded image shape) and never on the weights. At
the tiny profile, where every batch has the same 128-pixel shape, that is 2 to 3 ms of a 70 to 120 ms
training step (RPN: ``grid_priors`` twice, for the targets and the proposals, ``valid_flags`` once an
image) and about 0.6 ms of a 10 ms test image.

:class:`CachedAnchorGenerator` is mmdet's generator, same arguments and same tensors, keeping its last
:data:`CACHE_SIZE` results (of both methods) by their arguments. mmdet itself hands the one list of
anchors to every image of a batch (``AnchorHead.get_anchors``), so no caller changes them in place;
``tests/test_anchors.py`` trains each anchor-based cell with and without the cache and compares the
weights bit for bit. Each call returns a new list of the cached tensors.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS

CACHE_SIZE = 32  # results a generator keeps (a multi-scale pipeline gives a few shapes a batch)


def _sizes(featmap_sizes) -> tuple:
    return tuple(tuple(int(v) for v in size) for size in featmap_sizes)


@TASK_UTILS.register_module()
class CachedAnchorGenerator(AnchorGenerator):
    """:class:`mmdet...AnchorGenerator` whose ``grid_priors`` and ``valid_flags`` are computed once per
    distinct argument (feature-map sizes, dtype or padded shape, device) and then reused."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache: OrderedDict = OrderedDict()

    def _cached(self, key, compute):
        hit = self._cache.get(key)
        if hit is None:
            hit = tuple(compute())
            self._cache[key] = hit
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return list(hit)

    def grid_priors(self, featmap_sizes, dtype: torch.dtype = torch.float32, device="cuda"):
        key = ("priors", _sizes(featmap_sizes), dtype, str(torch.device(device)))
        return self._cached(key, lambda: super(CachedAnchorGenerator, self).grid_priors(
            featmap_sizes, dtype=dtype, device=device))

    def valid_flags(self, featmap_sizes, pad_shape, device="cuda"):
        key = ("flags", _sizes(featmap_sizes), tuple(int(v) for v in pad_shape), str(torch.device(device)))
        return self._cached(key, lambda: super(CachedAnchorGenerator, self).valid_flags(
            featmap_sizes, pad_shape, device=device))
