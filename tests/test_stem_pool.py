"""StemPoolResNet (the tiny profile's backbone): mmdet's ResNet whose stem pools through the channels-last
CPU kernel. The pooling gives F.max_pool2d's values and gradients bit for bit, ties included (a ReLU map is
full of equal zeros, where the kept index decides who gets the gradient); a cell trained and tested with
it computes what it computes with mmdet's ResNet, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.detectors.backbones import ChannelsLastMaxPool2d, StemPoolResNet
from harness.detectors.builder import TINY_BATCH, TINY_SIZE, build_cell_config
from harness.detectors.check import CHECK_CLASSES, build_model, sgd_wrapper, synthetic_batch
from same_cell import assert_train_and_predict_the_same


def _pooled(pool, x):
    x = x.clone().requires_grad_()
    out = pool(x)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=x.dtype).view_as(out)
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 16, 64, 64), (1, 3, 7, 9), (2, 5, 8, 8), (3, 1, 2, 5)])
@pytest.mark.parametrize("kind", ["relu", "integers", "constant"])
def test_the_pooling_equals_max_pool2d_bit_for_bit(shape, dtype, kind):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if kind == "relu":  # about half of the values tie at zero
        x = x.clamp(min=0)
    elif kind == "integers":  # many ties at several values, across window positions
        x = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    else:
        x = torch.full(shape, 0.5, dtype=dtype)
    out, grad = _pooled(ChannelsLastMaxPool2d(3, 2, 1), x)
    ref_out, ref_grad = _pooled(lambda t: F.max_pool2d(t, 3, 2, 1), x)
    assert torch.equal(out, ref_out)
    assert torch.equal(grad, ref_grad)
    assert out.is_contiguous() and grad.is_contiguous()


def test_nan_and_infinities_pool_as_max_pool2d():
    x = torch.zeros(1, 2, 6, 6)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 2, 3] = float("inf")
    x[0, 1, 4, 4] = float("-inf")
    out, grad = _pooled(ChannelsLastMaxPool2d(3, 2, 1), x)
    ref_out, ref_grad = _pooled(lambda t: F.max_pool2d(t, 3, 2, 1), x)
    assert torch.equal(out.isnan(), ref_out.isnan())
    assert torch.equal(out.nan_to_num(), ref_out.nan_to_num())
    assert torch.equal(grad, ref_grad)


def test_without_gradients_and_in_other_layouts_it_pools_the_same():
    x = torch.randn(2, 4, 10, 10).clamp(min=0)
    pool = ChannelsLastMaxPool2d(3, 2, 1)
    with torch.no_grad():
        assert torch.equal(pool(x), F.max_pool2d(x, 3, 2, 1))
    cl = x.contiguous(memory_format=torch.channels_last)  # already channels last: torch's own path
    assert torch.equal(pool(cl), F.max_pool2d(x, 3, 2, 1))


def test_the_backbone_is_resnet_with_the_same_weights_and_outputs():
    from mmdet.models.backbones import ResNet

    kwargs = dict(depth=18, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3))
    torch.manual_seed(0)
    plain = ResNet(**kwargs)
    torch.manual_seed(0)
    fast = StemPoolResNet(**kwargs)
    assert isinstance(fast.maxpool, ChannelsLastMaxPool2d)
    assert list(plain.state_dict()) == list(fast.state_dict())
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(plain(x), fast(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("detector,loss", [("atss", "rs"), ("mask_rcnn", "ap"), ("yolact", "focal")])
def test_a_cell_trains_and_predicts_the_same_with_the_stem_pooling(detector, loss):
    batch = synthetic_batch(num_images=TINY_BATCH, size=TINY_SIZE, num_classes=len(CHECK_CLASSES))
    pairs = []
    for backbone in ("StemPoolResNet", "ResNet"):
        torch.manual_seed(0)
        cfg = build_cell_config(detector, loss, classes=CHECK_CLASSES, profile="tiny")
        assert cfg.model.backbone.type == "StemPoolResNet"  # the tiny profile's backbone
        cfg.model.backbone.type = backbone
        model = build_model(cfg)
        pairs.append((model, sgd_wrapper(model, cfg.optim_wrapper.optimizer.lr)))
    assert isinstance(pairs[0][0].backbone.maxpool, ChannelsLastMaxPool2d)
    assert not isinstance(pairs[1][0].backbone.maxpool, ChannelsLastMaxPool2d)
    assert_train_and_predict_the_same(pairs[0], pairs[1], batch)


def test_the_paper_profile_keeps_mmdets_resnet():
    cfg = build_cell_config("faster_rcnn", "rs", classes=CHECK_CLASSES, profile="paper")
    assert cfg.model.backbone.type == "ResNet"
