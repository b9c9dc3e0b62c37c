"""Edge cases of every loss: no positives, all ignored, bad input, quality 0, dtypes, devices."""

from __future__ import annotations

import warnings

import pytest
import torch

import reference_losses as ref
from harness.losses import (
    QUALITY_FLOOR,
    SelfBalance,
    alrp_classification_loss,
    alrp_localisation_loss,
    ap_loss,
    bucketed_ap_loss,
    bucketed_rank_sort_loss,
    cross_entropy_loss,
    focal_loss,
    quality_targets,
    rank_sort_loss,
)
from loss_cases import make_case


def call(name, logits, targets):
    """The total of each loss as a 0-d tensor (aLRP with unit localisation errors)."""
    if name == "rs":
        return rank_sort_loss(logits, targets).total
    if name == "alrp":
        p = int((targets > 0).sum())
        return alrp_classification_loss(logits, targets, torch.ones(p, dtype=logits.dtype))[0]
    if name == "ap":
        return ap_loss(logits, targets)
    if name == "bucketed_rs":
        return bucketed_rank_sort_loss(logits, targets).total
    if name == "bucketed_ap":
        return bucketed_ap_loss(logits, targets)
    if name == "focal":
        return focal_loss(logits, targets)
    return cross_entropy_loss(logits, targets)


ALL = ["rs", "alrp", "ap", "bucketed_rs", "bucketed_ap", "focal", "ce"]
RANKING = ["rs", "alrp", "ap", "bucketed_rs", "bucketed_ap"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_no_positives_gives_zero_loss_and_zero_gradient(name, fill):
    s = torch.randn(50, dtype=torch.float64, requires_grad=True)
    t = torch.full((50,), fill, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = call(name, s, t)
        loss.backward()
    if name in RANKING or fill == -1.0:  # pointwise losses still push negatives down
        assert loss.item() == 0.0
        assert torch.equal(s.grad, torch.zeros_like(s))
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", RANKING)
def test_empty_input(name):
    s = torch.zeros(0, requires_grad=True)
    loss = call(name, s, torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0 and s.grad.shape == (0,)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_are_rejected_with_count_and_index(name, bad):
    s = torch.randn(20)
    s[7] = bad
    s[12] = bad
    t = torch.zeros(20)
    t[3] = 1.0
    with pytest.raises(ValueError, match=r"2 non-finite logit\(s\).*index 7"):
        call(name, s, t)


@pytest.mark.parametrize("name", ALL)
def test_shape_mismatch_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"same shape, got \(10,\) and \(11,\)"):
        call(name, torch.randn(10), torch.zeros(11))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("value", [1.5, -0.5, float("nan")])
def test_invalid_targets_are_rejected(name, value):
    t = torch.zeros(10)
    t[4] = value
    with pytest.raises(ValueError, match="invalid target.*index 4"):
        call(name, torch.randn(10), t)


def test_alrp_loc_errors_must_match_positives():
    s, t = torch.randn(10), torch.zeros(10)
    t[:3] = 1
    with pytest.raises(ValueError, match="one entry per positive"):
        alrp_classification_loss(s, t, torch.ones(2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        alrp_classification_loss(s, t, torch.tensor([1.0, float("nan"), 0.0]))


def test_negative_delta_is_rejected():
    with pytest.raises(ValueError, match="delta must be"):
        rank_sort_loss(torch.randn(4), torch.tensor([1.0, 0, 0, 0]), delta=-0.1)


def test_quality_zero_positive_is_floored_and_behaves_like_quality_zero():
    """Documented choice: quality_targets clamps to QUALITY_FLOOR, so a positive whose IoU is 0 stays
    a positive, and the loss equals the plain definition with quality exactly 0 up to that floor."""
    s, t = make_case("random", seed=11)
    pos = t > 0
    iou = t.clone()
    first = int(pos.nonzero()[0])
    iou[first] = 0.0
    targets = torch.where(pos, quality_targets(iou), t)
    assert targets[first] == QUALITY_FLOOR
    x = s.clone().requires_grad_(True)
    out = rank_sort_loss(x, targets)
    (g,) = torch.autograd.grad(out.total, x)
    r_rank, r_sort, r_g = ref.rank_sort(s, iou, 0.5, positive=pos)
    assert out.ranking.item() == pytest.approx(r_rank, abs=1e-12)
    assert out.sorting.item() == pytest.approx(r_sort, abs=1e-5)
    torch.testing.assert_close(g, r_g, atol=1e-5, rtol=0)
    # Without the floor the positive would silently become a negative: that is why targets validate.
    assert int((torch.where(pos, iou, t) > 0).sum()) == int(pos.sum()) - 1


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits(name, dtype):
    s, t = make_case("random", seed=12)
    s = s.to(dtype)
    x = s.clone().requires_grad_(True)
    loss = call(name, x, t.to(dtype))
    loss.backward()
    assert loss.dtype == torch.float32
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    x64 = s.double().requires_grad_(True)
    loss64 = call(name, x64, t)
    assert loss.item() == pytest.approx(loss64.item(), abs=2e-3)


def test_rs_total_carries_the_full_update_and_weights_scale_it():
    s, t = make_case("random", seed=13)
    x = s.clone().requires_grad_(True)
    out = rank_sort_loss(x, t)
    (g,) = torch.autograd.grad(0.2 * out.total, x)
    _, _, r_g = ref.rank_sort(s, t, 0.5)
    torch.testing.assert_close(g, 0.2 * r_g, atol=1e-12, rtol=0)
    ranking, sorting = out  # unpacks like the reference's pair
    assert ranking is out.ranking and sorting is out.sorting


def test_sorting_alone_backpropagates_the_sorting_update():
    """The reference attaches everything to the first output (sorting.backward() gives nothing);
    here each output carries its own part of the update."""
    s, t = make_case("random", seed=14)
    x = s.clone().requires_grad_(True)
    out = rank_sort_loss(x, t)
    (g_sort,) = torch.autograd.grad(out.sorting, x, retain_graph=True)
    assert g_sort.abs().sum() > 0
    (g_rank,) = torch.autograd.grad(out.ranking, x)
    _, _, r_g = ref.rank_sort(s, t, 0.5)
    torch.testing.assert_close(g_rank + g_sort, r_g, atol=1e-12, rtol=0)


def test_logits_without_grad_return_plain_values():
    s, t = make_case("random", seed=15)
    out = rank_sort_loss(s, t)
    assert not out.ranking.requires_grad
    assert out.ranking.item() == pytest.approx(ref.rank_sort(s, t, 0.5)[0], abs=1e-12)


def test_focal_and_ce_wrap_torchvision_and_torch():
    from torchvision.ops import sigmoid_focal_loss
    import torch.nn.functional as F

    s, t = make_case("ignored", seed=16)
    valid = t >= 0
    binary = (t > 0).double()
    num_pos = (t > 0).sum()
    expect = sigmoid_focal_loss(s[valid], binary[valid], reduction="sum") / num_pos
    assert focal_loss(s, t).item() == pytest.approx(expect.item(), rel=1e-12)
    expect = F.binary_cross_entropy_with_logits(s[valid], binary[valid], reduction="sum") / num_pos
    assert cross_entropy_loss(s, t).item() == pytest.approx(expect.item(), rel=1e-12)
    # gamma = 0 and alpha = -1 (no weighting) turn Focal into cross-entropy
    assert focal_loss(s, t, alpha=-1, gamma=0).item() == pytest.approx(cross_entropy_loss(s, t).item(), rel=1e-12)


def test_alrp_localisation_has_no_gradient_through_ranks():
    s, t = make_case("random", seed=17)
    p = int((t > 0).sum())
    e = torch.rand(p, dtype=torch.float64, requires_grad=True)
    x = s.clone().requires_grad_(True)
    _, ranks = alrp_classification_loss(x, t, e)
    assert not ranks.requires_grad
    loc = alrp_localisation_loss(x, t, e, ranks)
    loc.backward()
    assert x.grad is None and e.grad is not None and (e.grad > 0).all()


def test_self_balance_updates_once_per_epoch_and_round_trips():
    sb = SelfBalance()
    assert sb.weight == 50.0
    for cls, loc in [(0.8, 0.2), (0.6, 0.2)]:
        sb.update(torch.tensor(cls), loc)
    assert sb.weight == 50.0  # unchanged until the epoch ends
    assert sb.epoch_end() == pytest.approx((0.2 + 0.7) / 0.2)
    sb.update(1.0, 0.5)
    clone = SelfBalance()
    clone.load_state_dict(sb.state_dict())
    assert clone.epoch_end() == sb.epoch_end() == pytest.approx(3.0)
    empty = SelfBalance(10.0)
    assert empty.epoch_end() == 10.0  # no iterations: unchanged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", RANKING)
def test_cuda_matches_cpu(name):
    s, t = make_case("ties", seed=18)
    cpu = s.clone().requires_grad_(True)
    gpu = s.clone().cuda().requires_grad_(True)
    lc, lg = call(name, cpu, t), call(name, gpu, t.cuda())  # (aLRP: CUDA logits, CPU localisation errors)
    lc.backward()
    lg.backward()
    assert lg.item() == pytest.approx(lc.item(), abs=1e-9)
    torch.testing.assert_close(gpu.grad.cpu(), cpu.grad, atol=1e-9, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_alrp_localisation_component_matches_cpu():
    s, t = make_case("ties", seed=19)
    p = int((t > 0).sum())
    e = torch.linspace(0.1, 0.9, p, dtype=torch.float64)
    out = {}
    for device in ("cpu", "cuda"):
        x, err = s.to(device), e.detach().clone().to(device).requires_grad_(True)
        _, ranks = alrp_classification_loss(x, t.to(device), err)
        loc = alrp_localisation_loss(x, t.to(device), err, ranks)
        loc.backward()
        assert loc.device.type == device
        out[device] = (loc.item(), err.grad.cpu())
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], abs=1e-12)
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], atol=1e-12, rtol=0)


def test_validate_inputs_is_the_public_check_loss_authors_use():
    from harness.losses import validate_inputs

    assert "(0, 1]" in validate_inputs.__doc__
    validate_inputs(torch.randn(5), torch.tensor([0.0, -1.0, 0.3, 1.0, 0.0]), "mine")  # valid: no error
    with pytest.raises(ValueError, match=r"^mine: 1 non-finite logit\(s\).*index 2"):
        validate_inputs(torch.tensor([0.0, 1.0, float("nan")]), torch.zeros(3), "mine")
    with pytest.raises(ValueError, match=r"^mine: 1 invalid target\(s\).*index 1 is -0.5"):
        validate_inputs(torch.zeros(3), torch.tensor([0.0, -0.5, 1.0]), "mine")
    with pytest.raises(ValueError, match="same shape"):
        validate_inputs(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="floating point"):
        validate_inputs(torch.zeros(3, dtype=torch.long), torch.zeros(3))


def test_logits_modified_in_place_before_backward_are_refused():
    """The negatives' update is applied in the backward pass from the logits: autograd guards them."""
    s, t = make_case("random", seed=20)
    x = s.clone().requires_grad_(True)
    y = x * 1.0
    loss = rank_sort_loss(y, t).total
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
