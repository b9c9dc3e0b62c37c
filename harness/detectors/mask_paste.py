"""Mask R-CNN's masks pasted into small images in one batch on a CPU: the same pixels as mmdet, faster.

mmdet's ``FCNMaskHead._predict_by_feat_single`` pastes each detection's 28 × 28 mask into the image with
``grid_sample``. On a CPU it pastes them one at a time (``num_chunks = N``), each over its own box widened
by a pixel (``skip_empty``): about fifteen small tensor operations a detection, 50 detections an image at
the tiny profile, which made pasting most of a Mask R-CNN test image there; and before that it takes the
sigmoid of every class's map of every detection (80 maps of 28 × 28 each), of which it keeps one. :func:`install` wraps that
method: on a CPU, with a positive binary threshold (``mask_thr_binary``, 0.5 in every recipe) and at most
:data:`BATCH_LIMIT` pixels over all the image's detections, every mask is sampled over the whole image in
one ``grid_sample`` over the window mmdet would have pasted it into (the windows padded to the largest),
and only the detection's
own class map goes through the sigmoid (an elementwise function: the same values); anything else (a CUDA
tensor, a threshold of 0 or below, the paper profile's 1333 × 800 images) goes to mmdet's own code.

Why the pixels are the same: each output pixel of ``grid_sample`` depends only on its own grid point, and
a pixel's grid point is computed by the same float32 operations from the same pixel index and box in both
versions (``(i + 0.5 - x0) / (x1 - x0) * 2 - 1``, an infinite value set to 0), so inside a detection's
window the sampled values are equal; outside it mmdet leaves the pixel empty, and so does the window cut
here. ``tests/test_mask_paste.py`` checks the masks equal to mmdet's, boxes at and beyond the border and
of zero width included.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# at most this many pixels (detections x image height x width) are pasted in one batch; above it the
# grid (8 bytes a pixel) and the sampled masks would outweigh what batching saves, and mmdet's per-box
# windows touch far fewer pixels
BATCH_LIMIT = 1 << 22


def _window_starts_ends(boxes: torch.Tensor, img_h: int, img_w: int):
    """Each box's window as mmdet's ``_do_paste_mask(skip_empty=True)`` takes it for a single box: columns
    ``floor(x0) - 1`` (at least 0) to ``ceil(x1) + 1`` (at most the width, exclusive), rows alike."""
    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0).long()
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0).long()
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=img_w).long()
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=img_h).long()
    return x0, y0, x1, y1


def paste_batched(masks: torch.Tensor, boxes: torch.Tensor, img_h: int, img_w: int,
                  threshold: float) -> torch.Tensor:
    """(N, img_h, img_w) bool: ``masks`` (N, 1, h, w) probabilities pasted at ``boxes`` (N, 4, x0 y0 x1 y1)
    and thresholded at ``threshold`` (> 0), equal to mmdet's one-by-one CPU pasting: every mask is sampled
    in one ``grid_sample`` over a grid as large as the largest window, each row of it starting at its own
    window's corner, and only the pixels inside a mask's window are kept."""
    n = masks.shape[0]
    out = torch.zeros(n, img_h, img_w, dtype=torch.bool)
    wx0, wy0, wx1, wy1 = _window_starts_ends(boxes, img_h, img_w)
    width, height = int((wx1 - wx0).max().clamp(min=0)), int((wy1 - wy0).max().clamp(min=0))
    if not n or not width or not height:
        return out
    cols = wx0[:, None] + torch.arange(width)  # (N, width) image columns, past the window's end for some
    rows = wy0[:, None] + torch.arange(height)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    # mmdet's grid, value for value: (pixel index as float32 + 0.5 - x0) / (x1 - x0) * 2 - 1, inf set to 0
    img_x = (cols.to(torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
    img_y = (rows.to(torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
    img_x[torch.isinf(img_x)] = 0
    img_y[torch.isinf(img_y)] = 0
    grid = torch.stack([img_x[:, None, :].expand(n, height, width), img_y[:, :, None].expand(n, height, width)], dim=3)
    sampled = F.grid_sample(masks.to(dtype=torch.float32), grid, align_corners=False)[:, 0]
    keep = (sampled >= threshold) & (cols < wx1[:, None])[:, None, :] & (rows < wy1[:, None])[:, :, None]
    flat = (torch.arange(n)[:, None, None] * img_h + rows[:, :, None]) * img_w + cols[:, None, :]
    out.view(-1)[flat[keep]] = True
    return out


def _batched_single(original, self, mask_preds, bboxes, labels, img_meta, rcnn_test_cfg, rescale=False,
                    activate_map=False):
    """``FCNMaskHead._predict_by_feat_single`` with the masks pasted by :func:`paste_batched` where that
    gives mmdet's pixels at less cost; mmdet's own method otherwise."""
    threshold = rcnn_test_cfg.mask_thr_binary
    img_h, img_w = img_meta["ori_shape"][:2]
    scale_factor = bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
    if not rescale:  # mmdet's size of the scaled image: np.round (half to even, as Python's round)
        img_h = int(round(img_h * scale_factor[0, 1].item()))
        img_w = int(round(img_w * scale_factor[0, 0].item()))
    n = len(mask_preds)
    if bboxes.device.type != "cpu" or threshold <= 0 or n * img_h * img_w > BATCH_LIMIT:
        return original(self, mask_preds, bboxes, labels, img_meta, rcnn_test_cfg, rescale, activate_map)
    if activate_map:  # probabilities already (test-time augmentation)
        mask_preds = bboxes.new_tensor(mask_preds)
    if not self.class_agnostic:  # each detection's own class first: the sigmoid of 1 map, not of 80
        mask_preds = mask_preds[range(n), labels][:, None]
    if not activate_map:
        mask_preds = mask_preds.sigmoid()
    if rescale:
        bboxes /= scale_factor  # in place, as mmdet does
    return paste_batched(mask_preds, bboxes, img_h, img_w, threshold)


def install() -> None:
    """Wrap ``FCNMaskHead._predict_by_feat_single`` (and so every subclass's, the harness's
    ``DiceMaskHead`` included) with :func:`_batched_single`; calling it again changes nothing."""
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    current = FCNMaskHead._predict_by_feat_single
    if getattr(current, "_harness_batched", False):
        return

    @functools.wraps(current)
    def wrapped(self, *args, **kwargs):
        return _batched_single(current, self, *args, **kwargs)

    wrapped._harness_batched = True
    FCNMaskHead._predict_by_feat_single = wrapped


def installed() -> bool:
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead

    return getattr(FCNMaskHead._predict_by_feat_single, "_harness_batched", False)
