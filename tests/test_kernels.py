"""No compiled mmcv kernel on any cell's path (harness/detectors/kernels.py).

Every cell trains and predicts with every ``mmcv._ext`` function made to raise; the routed NMS, RoIAlign
and sigmoid focal loss equal mmcv's own CPU kernels."""

from __future__ import annotations

import contextlib
import importlib
import warnings

import numpy as np
import pytest
import torch

import harness.detectors.plugin  # noqa: F401  (installs the routing, as every cell config does)
from harness.detectors import cells, kernels

ALL_CELLS = cells()


@contextlib.contextmanager
def unrouted():
    """mmcv's modules call the real ``mmcv._ext`` meanwhile (the state without the plug-in)."""
    saved = {}
    for name in kernels.ROUTED:
        module = importlib.import_module(name)
        saved[module] = module.ext_module
        module.ext_module = module.ext_module._ext
    try:
        yield
    finally:
        for module, ext in saved.items():
            module.ext_module = ext


def test_the_plugin_routes_every_listed_function():
    assert kernels.installed()
    ext = importlib.import_module("mmcv._ext")
    nms_module = importlib.import_module("mmcv.ops.nms")  # (mmcv.ops.nms is also the function's name)
    roi_module = importlib.import_module("mmcv.ops.roi_align")
    assert nms_module.ext_module.nms is kernels.nms
    assert roi_module.ext_module.roi_align_forward.func is kernels.roi_align_forward
    assert nms_module.ext_module.softnms is ext.softnms  # anything not routed is mmcv's own
    kernels.install()  # idempotent: no routing of the routing
    assert nms_module.ext_module._ext is ext


def test_forbid_compiled_ops_raises_and_restores():
    ext = importlib.import_module("mmcv._ext")
    original = ext.nms
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    with kernels.forbid_compiled_ops() as called:
        with pytest.raises(kernels.CompiledOpCalled, match="mmcv._ext.nms"):
            ext.nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5, offset=0)
        assert called == ["nms"]
    assert ext.nms is original


def _check(detector, loss):
    from harness.detectors.check import check_cell

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with kernels.forbid_compiled_ops() as called:
            report = check_cell(detector, loss, raise_on_failure=False)
    return report, called


@pytest.mark.parametrize("detector,loss", ALL_CELLS, ids=[f"{d}-{x}" for d, x in ALL_CELLS])
def test_cell_trains_and_predicts_without_compiled_mmcv_kernels(detector, loss):
    report, called = _check(detector, loss)
    assert called == []
    assert report.ok, report.problems


@pytest.mark.parametrize("detector,expected", [("faster_rcnn", "nms"), ("atss", "nms")])
def test_without_the_routing_a_cell_reaches_mmcv_kernels(detector, expected):
    """The control: the cells above would call mmcv's kernels if the routing were not installed."""
    with unrouted(), pytest.raises(kernels.CompiledOpCalled):
        _check(detector, "rs")


# ------------------------------------------------------------------------------------------------ NMS

def _random_boxes(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _iou(a: torch.Tensor, b: torch.Tensor, offset: int = 0) -> torch.Tensor:
    from torchvision.ops import box_iou

    if offset:
        a, b = a.clone(), b.clone()
        a[:, 2:] += offset
        b[:, 2:] += offset
    return box_iou(a, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("offset", [0, 1])
def test_nms_keeps_the_same_boxes_as_mmcv_with_distinct_scores(seed, thr, offset):
    ext = importlib.import_module("mmcv._ext")
    boxes = _random_boxes(300, seed)
    scores = torch.randperm(300, generator=torch.Generator().manual_seed(seed + 100)).float() / 300
    expected = ext.nms(boxes, scores, iou_threshold=thr, offset=offset)
    got = kernels.nms(boxes, scores, iou_threshold=thr, offset=offset)
    assert len(expected) > 10 and len(expected) < 300  # some boxes kept, some suppressed
    assert torch.equal(got, expected)


def test_nms_through_mmcvs_wrapper_matches_with_score_filter_and_max_num():
    from mmcv.ops import batched_nms, nms

    boxes = _random_boxes(500, 7)
    scores = torch.rand(500, generator=torch.Generator().manual_seed(8))
    labels = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(9))
    routed = nms(boxes, scores, 0.5, score_threshold=0.2, max_num=50)
    routed_batched = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.6))
    with unrouted():
        plain = nms(boxes, scores, 0.5, score_threshold=0.2, max_num=50)
        plain_batched = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.6))
    for a, b in zip(routed + routed_batched, plain + plain_batched):
        assert torch.equal(a, b)
    empty = kernels.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.long


def _assert_valid_nms(boxes, scores, keep, thr):
    """A valid NMS: kept boxes in non-increasing score order, no two kept boxes above the threshold,
    every dropped box above the threshold with a kept box of equal or higher score."""
    keep = keep.tolist()
    assert len(set(keep)) == len(keep)
    kept_scores = scores[keep]
    assert bool((kept_scores[:-1] >= kept_scores[1:]).all())
    iou = _iou(boxes, boxes)
    sub = iou[keep][:, keep]
    sub.fill_diagonal_(0)
    assert float(sub.max()) <= thr
    dropped = sorted(set(range(len(boxes))) - set(keep))
    for d in dropped:
        assert any(iou[d, k] > thr and scores[k] >= scores[d] for k in keep), f"box {d} dropped without cause"


@pytest.mark.parametrize("seed", range(4))
def test_nms_with_tied_scores_is_a_valid_nms(seed):
    ext = importlib.import_module("mmcv._ext")
    boxes = _random_boxes(200, seed, size=60)
    scores = torch.randint(1, 5, (200,), generator=torch.Generator().manual_seed(seed)).float() / 5
    got = kernels.nms(boxes, scores, iou_threshold=0.5)
    _assert_valid_nms(boxes, scores, got, 0.5)
    _assert_valid_nms(boxes, scores, ext.nms(boxes, scores, iou_threshold=0.5, offset=0), 0.5)


def test_valid_nms_check_can_fail():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.9, 0.5])
    with pytest.raises(AssertionError):
        _assert_valid_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5)  # two overlapping boxes kept
    with pytest.raises(AssertionError):
        _assert_valid_nms(boxes, scores, torch.tensor([0]), 0.5)  # box 2 dropped without cause


# ------------------------------------------------------------------------------------------- RoIAlign

def _rois(n: int, seed: int, height: int, width: int, images: int, stride: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # boxes in image coordinates, some reaching past the feature map's border
    x1 = torch.rand(n, generator=g) * width * stride * 1.1 - 4
    y1 = torch.rand(n, generator=g) * height * stride * 1.1 - 4
    w = torch.rand(n, generator=g) * width * stride / 2 + 0.5
    h = torch.rand(n, generator=g) * height * stride / 2 + 0.5
    idx = torch.randint(0, images, (n,), generator=g).float()
    return torch.stack([idx, x1, y1, x1 + w, y1 + h], dim=1)


def _roi_align_with_grad(fn, features, rois, grad_seed=0):
    x = features.clone().requires_grad_(True)
    out = fn(x, rois)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("output_size,stride", [((7, 7), 4.0), ((14, 14), 8.0), ((5, 3), 16.0)])
def test_roi_align_matches_mmcv_in_values_and_input_gradients(sampling_ratio, output_size, stride):
    from mmcv.ops import RoIAlign, roi_align

    features = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    rois = _rois(40, 2, 20, 24, images=2, stride=stride)
    args = (output_size, 1 / stride, sampling_ratio, "avg", True)
    routed = _roi_align_with_grad(lambda x, r: roi_align(x, r, *args), features, rois)
    module = RoIAlign(output_size, 1 / stride, sampling_ratio, aligned=True)
    routed_module = _roi_align_with_grad(module, features, rois)
    tv_module = RoIAlign(output_size, 1 / stride, sampling_ratio, aligned=True, use_torchvision=True)
    switch = _roi_align_with_grad(tv_module, features, rois)
    with unrouted():
        plain = _roi_align_with_grad(lambda x, r: roi_align(x, r, *args), features, rois)
    assert float(plain[0].abs().max()) > 0.1 and float(plain[1].abs().max()) > 0.1
    for got in (routed, routed_module, switch):
        torch.testing.assert_close(got[0], plain[0], atol=1e-5, rtol=0)
        # mmcv's CPU backward sums a cell's contributions in another order: float32 rounding, relative
        torch.testing.assert_close(got[1], plain[1], atol=1e-5, rtol=1e-5)



def _roi_align_jacobian(features, rois, output_size, scale, sampling_ratio, aligned):
    """RoIAlign's Jacobian from its forward kernel alone (it is linear): one column per input entry."""
    from torchvision.ops import roi_align

    columns = []
    for k in range(features.numel()):
        unit = torch.zeros(features.numel(), dtype=features.dtype)
        unit[k] = 1
        columns.append(roi_align(unit.view_as(features), rois, output_size, scale, sampling_ratio, aligned).reshape(-1))
    return torch.stack(columns, dim=1)


@contextlib.contextmanager
def torchvision_cpu_kernels():
    """torchvision's own CPU RoIAlign kernels meanwhile (the harness's C kernels unregistered)."""
    assert kernels._TORCHVISION_CPU, "the plug-in did not register the C kernels"
    kernels._TORCHVISION_CPU.pop()._destroy()
    try:
        yield
    finally:
        kernels.install()
        assert kernels._TORCHVISION_CPU


def _hard_rois(n: int, seed: int, height: int, width: int, images: int, stride: float, dtype) -> torch.Tensor:
    """RoIs over the border, tiny, empty, wholly outside the map, over all of it, images unsorted."""
    rois = _rois(n, seed, height, width, images, stride)
    extra = torch.tensor([[images - 1, 3, 3, 3, 3], [0, -50, -50, -40, -40], [0, 0, 0, width * stride, height * stride],
                          [images - 1, width * stride + 5, 2, width * stride + 30, 9], [0, -3, -2, 0.5, 0.25]])
    return torch.cat([rois, extra]).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 16, 37])  # below, at and past the forward's block of 16 channels
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio,output_size,stride", [(0, (7, 7), 4.0), (2, (7, 7), 8.0), (0, (3, 5), 2.0),
                                                               (1, (2, 2), 16.0), (0, (14, 14), 1.0)])
def test_cpu_roi_align_kernels_equal_torchvisions_bit_for_bit(dtype, channels, aligned, sampling_ratio, output_size,
                                                              stride):
    """The C kernels the plug-in registers (harness/detectors/roi_align.c) give torchvision's own CPU kernels'
    values exactly (torch.equal), forward and backward, through the op and through autograd."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(channels + int(stride))
    features = torch.randn(3, channels, 13, 11, dtype=dtype, generator=g)
    rois = _hard_rois(40, 5, 13, 11, images=3, stride=stride, dtype=dtype)
    args = (output_size, 1 / stride, sampling_ratio, aligned)
    grad_out = torch.randn(rois.shape[0], channels, *output_size, dtype=dtype, generator=g)

    def forward_backward():
        x = features.clone().requires_grad_(True)
        out = roi_align(x, rois, *args)
        out.backward(grad_out)
        direct = torch.ops.torchvision._roi_align_backward(grad_out, rois, 1 / stride, *output_size, *features.shape,
                                                            sampling_ratio, aligned)
        return out.detach(), x.grad, direct

    ours = forward_backward()
    with torchvision_cpu_kernels():
        theirs = forward_backward()
    assert float(theirs[0].abs().max()) > 0.1 and float(theirs[1].abs().max()) > 0.1
    for got, want in zip(ours, theirs):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want), float((got - want).abs().max())


def test_cpu_roi_align_kernels_are_the_ones_registered():
    """With a C compiler (make setup installs one) the cells' RoIAlign runs the harness's C kernels, and a run
    records which (``provenance.cpu_roi_align``)."""
    from harness.detectors import native
    from harness.run.job import _cpu_roi_align

    assert native.compiler() is not None, "no C compiler: make setup installs gcc"
    assert kernels.cpu_roi_align().startswith("harness C kernels")
    assert _cpu_roi_align() == kernels.cpu_roi_align()
    with torchvision_cpu_kernels():
        assert kernels.cpu_roi_align().startswith("torchvision's kernels")


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio,output_size,stride", [(0, (7, 7), 4.0), (2, (7, 7), 8.0), (0, (3, 5), 2.0),
                                                               (1, (2, 2), 16.0)])
def test_cpu_roi_align_backward_is_the_transposed_forward(aligned, sampling_ratio, output_size, stride):
    """The CPU backward is ``Jᵀ · grad`` in float64 (to 1e-12), with J built from the forward kernel: RoIs
    over the border, tiny, empty and unsorted; an empty set of RoIs gives a zero gradient."""
    g = torch.Generator().manual_seed(7)
    features = torch.randn(3, 2, 12, 10, dtype=torch.float64, generator=g)
    rois = _hard_rois(30, 4, 12, 10, images=3, stride=stride, dtype=torch.float64)
    rows = _roi_align_jacobian(features, rois, output_size, 1 / stride, sampling_ratio, aligned)
    grad_out = torch.randn(rois.shape[0], 2, *output_size, dtype=torch.float64, generator=g)
    want = (rows.t() @ grad_out.reshape(-1)).view_as(features)
    assert float(want.abs().max()) > 0.1
    args = (1 / stride, *output_size, *features.shape, sampling_ratio, aligned)
    direct = kernels.roi_align_backward_cpu(grad_out, rois, *args)
    through_op = torch.ops.torchvision._roi_align_backward(grad_out, rois, *args)
    torch.testing.assert_close(direct, want, atol=1e-12, rtol=1e-12)
    assert torch.equal(through_op, direct)
    empty = kernels.roi_align_backward_cpu(grad_out[:0], rois[:0], *args)
    assert empty.shape == features.shape and not empty.any()
    no_rois = kernels.roi_align_forward_cpu(features, rois[:0], 1 / stride, *output_size, sampling_ratio, aligned)
    assert no_rois.shape == (0, 2, *output_size)


def test_mask_target_crop_matches_mmcv():
    """Mask R-CNN's mask targets: ``BitmapMasks.crop_and_resize`` (mmcv's ``roi_align`` on the masks)."""
    from mmdet.structures.mask import BitmapMasks

    rng = np.random.default_rng(0)
    masks = BitmapMasks((rng.random((5, 64, 80)) > 0.5).astype(np.uint8), 64, 80)
    boxes = _rois(12, 3, 64, 80, images=1, stride=1.0)[:, 1:].numpy()
    inds = rng.integers(0, 5, 12)
    with kernels.forbid_compiled_ops() as called:
        routed = masks.crop_and_resize(boxes, (28, 28), inds, binarize=False).to_ndarray()
    assert called == []
    with unrouted():
        plain = masks.crop_and_resize(boxes, (28, 28), inds, binarize=False).to_ndarray()
    assert plain.max() > 0
    np.testing.assert_allclose(routed, plain, atol=1e-5, rtol=0)


def test_max_pooled_roi_align_stays_on_mmcvs_kernel():
    from mmcv.ops import roi_align

    features = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 6, 6]])
    with kernels.forbid_compiled_ops() as called, pytest.raises(kernels.CompiledOpCalled):
        roi_align(features, rois, (2, 2), 1.0, 0, "max", True)
    assert called == ["roi_align_forward"]


# --------------------------------------------------------------------------------- sigmoid focal loss

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss_matches_mmdets_python_focal_loss(reduction):
    """mmdet's FocalLoss takes mmcv's compiled kernel on CUDA only; routed, it runs anywhere and equals
    mmdet's own Python focal loss (one-hot targets; label ``C`` is background) in value and gradient."""
    import torch.nn.functional as F
    from mmcv.ops import sigmoid_focal_loss
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(50, 6, generator=g, dtype=torch.float64) * 3)
    labels = torch.randint(0, 7, (50,), generator=g)
    a = logits.clone().requires_grad_(True)
    with kernels.forbid_compiled_ops() as called:
        got = sigmoid_focal_loss(a, labels, 2.0, 0.25, None, reduction)
        (got.sum() if reduction == "none" else got).backward()
    assert called == []
    b = logits.clone().requires_grad_(True)
    onehot = F.one_hot(labels, 7)[:, :6].to(b.dtype)
    expected = py_sigmoid_focal_loss(b, onehot, gamma=2.0, alpha=0.25, reduction="none")
    if reduction == "mean":
        expected = expected.sum() / logits.size(0)  # mmcv's 'mean' divides by the number of samples
    elif reduction == "sum":
        expected = expected.sum()
    (expected.sum() if reduction == "none" else expected).backward()
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)


def test_sigmoid_focal_loss_class_weight():
    from mmcv.ops import sigmoid_focal_loss

    logits = torch.randn(4, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1])
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    weighted = sigmoid_focal_loss(logits, labels, 2.0, 0.25, weight, "none")
    plain = sigmoid_focal_loss(logits, labels, 2.0, 0.25, None, "none")
    torch.testing.assert_close(weighted, plain * weight[labels].unsqueeze(1))
    with pytest.raises(ValueError, match="below num_classes"):
        sigmoid_focal_loss(logits, torch.tensor([0, 1, 3, 1]), 2.0, 0.25, weight, "none")
