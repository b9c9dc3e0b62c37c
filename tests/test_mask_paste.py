"""Mask R-CNN's batched CPU mask pasting (harness.detectors.mask_paste) gives mmdet's pixels exactly."""

from __future__ import annotations

import pytest
import torch
from mmengine.config import ConfigDict

from harness.detectors import mask_paste, plugin  # noqa: F401  (plugin installs the wrapper)

from mmdet.models.roi_heads.mask_heads import FCNMaskHead


def _mmdet_single():
    """mmdet's own ``_predict_by_feat_single`` (what the wrapper falls back to)."""
    method = FCNMaskHead._predict_by_feat_single
    return getattr(method, "__wrapped__", method)


def _boxes(n: int, width: int, height: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` boxes in a ``width`` × ``height`` image, the first five its edge cases."""
    size = torch.tensor([width, height], dtype=torch.float32)
    xy = torch.rand(n, 2, generator=gen) * 0.95 * size
    wh = torch.rand(n, 2, generator=gen) * size * 0.6
    boxes = torch.cat([xy, xy + wh], dim=1)
    # zero width and height (a fractional and an integral corner), a box past every border, one past the
    # right border only, the whole image (a box wholly outside the image, which mmdet's decoding never
    # gives, makes mmdet's own pasting raise)
    boxes[0] = torch.tensor([10.5, 20.25, 10.5, 20.25])
    boxes[1] = torch.tensor([7.0, 3.0, 7.0, 30.0])
    boxes[2] = torch.tensor([-5.0, -3.0, width + 4.0, height + 2.5])
    boxes[3] = torch.tensor([width - 3.0, 4.0, width + 9.0, 20.0])
    boxes[4] = torch.tensor([0.0, 0.0, float(width), float(height)])
    return boxes


@pytest.mark.parametrize("rescale", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_pasting_equals_mmdets(seed, rescale):
    assert mask_paste.installed(), "the harness's mmdet plug-in installs the batched pasting"
    gen = torch.Generator().manual_seed(seed)
    head = FCNMaskHead(num_convs=0, in_channels=8, conv_out_channels=8, num_classes=5)
    n, height, width = 40, 96, 113
    logits = torch.randn(n, 5, 28, 28, generator=gen) * 4
    labels = torch.randint(0, 5, (n,), generator=gen)
    scale = (1.25, 0.75) if rescale else (0.8, 1.3)
    # boxes in the network's input (the original image scaled): rescale divides them back, else the image
    # is scaled up to them
    boxes = _boxes(n, width, height, gen) * torch.tensor(scale * 2)
    meta = {"ori_shape": (height, width), "scale_factor": scale}
    cfg = ConfigDict(mask_thr_binary=0.5)
    ours = head._predict_by_feat_single(mask_preds=logits, bboxes=boxes.clone(), labels=labels, img_meta=meta,
                                        rcnn_test_cfg=cfg, rescale=rescale)
    theirs = _mmdet_single()(head, logits, boxes.clone(), labels, meta, cfg, rescale)
    assert ours.dtype == theirs.dtype == torch.bool
    assert ours.shape == theirs.shape
    assert theirs.any() and not theirs.all()
    assert torch.equal(ours, theirs)


def test_batched_path_taken_only_where_it_is_exact(monkeypatch):
    head = FCNMaskHead(num_convs=0, in_channels=8, conv_out_channels=8, num_classes=2, class_agnostic=True)
    gen = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(6, 1, 28, 28, generator=gen), torch.zeros(6, dtype=torch.long)
    boxes = _boxes(6, 64, 64, gen)
    meta = {"ori_shape": (64, 64), "scale_factor": (1.0, 1.0)}
    calls = []
    monkeypatch.setattr(mask_paste, "paste_batched",
                        lambda *a, **k: calls.append(1) or mask_paste.__dict__["_orig_paste"](*a, **k))
    monkeypatch.setitem(mask_paste.__dict__, "_orig_paste", _real_paste)
    for threshold, batched in ((0.5, True), (0.0, False), (-1.0, False)):
        calls.clear()
        cfg = ConfigDict(mask_thr_binary=threshold)
        ours = head._predict_by_feat_single(mask_preds=logits, bboxes=boxes.clone(), labels=labels, img_meta=meta,
                                            rcnn_test_cfg=cfg, rescale=True)
        theirs = _mmdet_single()(head, logits, boxes.clone(), labels, meta, cfg, True)
        assert bool(calls) is batched, threshold
        assert torch.equal(ours, theirs)
    calls.clear()
    monkeypatch.setattr(mask_paste, "BATCH_LIMIT", 6 * 64 * 64 - 1)  # one pixel too many: mmdet's path
    head._predict_by_feat_single(mask_preds=logits, bboxes=boxes.clone(), labels=labels, img_meta=meta,
                                 rcnn_test_cfg=ConfigDict(mask_thr_binary=0.5), rescale=True)
    assert not calls


_real_paste = mask_paste.paste_batched
