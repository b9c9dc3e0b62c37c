"""HarnessLoss (the registry as an mmdet loss): targets, one call per batch, the three balancing rules, self-balance
state and its hook; the sampler and the sigmoid-classes wrapper; heads never read a loss's name."""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest
import torch

import harness.detectors.plugin  # noqa: F401  (registers the modules)
from harness.detectors import dense_heads, roi_heads
from harness.detectors.head_loss import HarnessLoss, LocTerm, SigmoidClassesLoss
from harness.detectors.hooks import SelfBalanceHook
from harness.losses import alrp_localisation_loss, get_loss, loss_names, rank_sort_loss

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _batch(seed=0, rows=40, classes=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.full((rows,), classes, dtype=torch.long)
    pos = torch.tensor([3, 7, 11, 20, 31])
    labels[pos] = torch.tensor([0, 2, 2, 1, 3])
    weights = torch.ones(rows)
    weights[[5, 6]] = 0  # ignored anchors
    iou = torch.tensor([0.9, 0.55, 0.0, 0.7, 0.6], dtype=torch.float64)
    values = torch.rand(5, generator=g, dtype=torch.float64, requires_grad=True)
    return logits, labels, weights, pos, iou, values


def test_targets_follow_the_spec_kind():
    logits, labels, weights, pos, iou, _ = _batch()
    rs = HarnessLoss(loss="rs").targets(labels, weights, 4, quality=iou)
    assert rs.shape == (40, 4) and (rs[[5, 6]] == -1).all()
    assert rs[pos, labels[pos]].tolist() == pytest.approx([0.9, 0.55, 1e-6, 0.7, 0.6])  # quality 0 floored
    assert (rs > 0).sum() == 5 and (rs[~torch.isin(torch.arange(40), torch.tensor([3, 5, 6, 7, 11, 20, 31]))] == 0).all()
    ap = HarnessLoss(loss="ap").targets(labels, weights, 4, quality=iou)
    assert ap[pos, labels[pos]].tolist() == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="one quality per positive"):
        HarnessLoss(loss="rs").targets(labels, weights, 4)


def test_value_balancing_weights_each_positive_by_its_score_and_matches_the_rs_value():
    logits, labels, weights, pos, iou, values = _batch()
    module = HarnessLoss(loss="rs")
    targets = module.targets(labels, weights, 4, quality=iou)
    out = module.head_losses(logits, targets, LocTerm(values, pos))
    rs = rank_sort_loss(logits, targets, delta=0.5)
    assert float(out.terms["cls"]) == pytest.approx(float(rs.total))
    scores = logits.detach().sigmoid().max(1).values[pos]
    weighted = float((values * scores).sum() / scores.sum())
    assert float(out.terms["bbox"]) == pytest.approx(float(rs.total))  # λ makes the box term equal the RS value
    assert float(out.logs["w_bbox"]) == pytest.approx(float(rs.total) / weighted)
    assert {"rank", "sort", "w_bbox"} == set(out.logs)
    out.terms["bbox"].backward()
    assert values.grad is not None and torch.allclose(values.grad, out.logs["w_bbox"] * scores / scores.sum())


def test_primary_term_order_does_not_matter_and_must_cover_the_positives():
    logits, labels, weights, pos, iou, values = _batch()
    module = HarnessLoss(loss="rs")
    targets = module.targets(labels, weights, 4, quality=iou)
    perm = torch.tensor([4, 0, 3, 1, 2])
    a = module.head_losses(logits, targets, LocTerm(values, pos)).terms
    b = module.head_losses(logits, targets, LocTerm(values[perm], pos[perm])).terms
    assert float(a["bbox"]) == pytest.approx(float(b["bbox"]))
    with pytest.raises(ValueError, match="cover the 5 positive rows"):
        module.head_losses(logits, targets, LocTerm(values[:4], pos[:4]))


def test_self_balance_uses_rank_weighted_localisation_and_updates_per_epoch():
    logits, labels, weights, pos, iou, values = _batch()
    module = HarnessLoss(loss="alrp", loc_error_scale=0.6, sb_initial={"bbox": 50.0, "mask": 1.0})
    module.train()
    targets = module.targets(labels, weights, 4)
    cls_values, loc_values = [], []
    for _ in range(3):
        out = module.head_losses(logits, targets, LocTerm(values, pos), {"mask": LocTerm(values[:2], pos[:2])})
        spec_out = get_loss("alrp").classification(logits, targets, loc_errors=values.detach() / 0.6)
        loc = alrp_localisation_loss(logits, targets, values / 0.6, spec_out.ranks)
        assert float(out.terms["bbox"]) == pytest.approx(50.0 * float(loc))
        assert float(out.terms["mask"]) == pytest.approx(1.0 * float(values[:2].mean()))
        cls_values.append(float(spec_out.loss))
        loc_values.append(float(loc))
    runner = SimpleNamespace(model=torch.nn.Sequential(module), logger=SimpleNamespace(info=lambda *a: None))
    SelfBalanceHook().after_train_epoch(runner)
    expected = (sum(loc_values) + sum(cls_values)) / sum(loc_values)
    assert module.self_balance["bbox"].weight == pytest.approx(expected)
    # the weights travel with the model's state dict (a resumed run continues with them)
    fresh = HarnessLoss(loss="alrp")
    fresh.load_state_dict(module.state_dict())
    assert fresh.self_balance["bbox"].weight == expected == module.self_balance["bbox"].weight
    # every state-dict entry is a tensor (mmengine broadcasts them all at the start of distributed training)
    assert all(isinstance(v, torch.Tensor) for v in module.state_dict().values())
    older = HarnessLoss(loss="alrp")  # checkpoints from before the tensor encoding hold a plain dict
    older.set_extra_state({"self_balance": {"bbox": module.self_balance["bbox"].state_dict()}})
    assert older.self_balance["bbox"].weight == expected
    # evaluation mode does not count towards the epoch
    module.eval()
    module.head_losses(logits, targets, LocTerm(values, pos))
    assert module.self_balance["bbox"]._count == 0


def test_fixed_balancing_and_head_weight():
    logits, labels, weights, pos, iou, values = _batch()
    module = HarnessLoss(loss="ap", loc_weights={"bbox": 2.0}, loss_weight=0.2, log_prefix="rpn_")
    targets = module.targets(labels, weights, 4)
    out = module.head_losses(logits, targets, LocTerm(values, pos))
    assert float(out.terms["bbox"]) == pytest.approx(0.2 * 2.0 * float(values.mean()))
    assert float(out.terms["cls"]) == pytest.approx(0.2 * float(get_loss("ap").classification(logits, targets).loss))
    assert set(out.as_dict("loss_rpn_")) == {"loss_rpn_cls", "loss_rpn_bbox", "rpn_ap", "rpn_w_bbox"}


def test_fixed_balancing_can_weight_by_score_and_pass_the_losses_options():
    """The Bucketed release's AP Loss ATSS / PAA recipes: each positive's GIoU weighted by its max sigmoid score
    (detached), normalised by the weights' sum, x a fixed weight, no self-balancing; δ reaches the AP loss."""
    from harness.losses import ap_loss

    logits, labels, weights, pos, iou, values = _batch()
    module = HarnessLoss(loss="ap", loc_weights={"bbox": 2.0}, score_weighted=True, options={"delta": 0.5})
    targets = module.targets(labels, weights, 4)
    out = module.head_losses(logits, targets, LocTerm(values, pos))
    scores = logits.detach().sigmoid().max(1).values[pos]
    assert float(out.terms["bbox"]) == pytest.approx(2.0 * float((values * scores).sum() / scores.sum()))
    assert float(out.terms["cls"]) == pytest.approx(float(ap_loss(logits, targets, delta=0.5)))
    assert float(out.terms["cls"]) != pytest.approx(float(ap_loss(logits, targets, delta=1.0)))
    assert float(out.logs["w_bbox"]) == 2.0  # fixed: no balancing against the classification value
    out.terms["bbox"].backward()
    assert torch.allclose(values.grad, 2.0 * scores / scores.sum())
    plain = HarnessLoss(loss="ap", loc_weights={"bbox": 2.0}).head_losses(logits, targets, LocTerm(values, pos))
    assert float(plain.terms["bbox"]) == pytest.approx(2.0 * float(values.mean()))  # other AP cells: plain mean


def _yolact_mask_term(monkeypatch, cap, positives=150):
    """RankYOLACTProtonet.mask_term on one image with ``positives`` positives (cropped masks stubbed)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    proto = dense_heads.RankYOLACTProtonet(num_classes=2, in_channels=4, proto_channels=(4, None, 4, 3),
                                           proto_kernel_sizes=(3, -2, 3, 1), num_protos=3, max_masks_to_train=cap)
    preds = torch.rand(positives, 8, 8, requires_grad=True)
    monkeypatch.setattr(proto, "forward", lambda x, infos: ([preds], None))
    monkeypatch.setattr(proto, "crop_mask_preds", lambda mask_preds, metas, infos: mask_preds)
    sample = DetDataSample(metainfo={"img_shape": (8, 8), "pad_shape": (8, 8), "batch_input_shape": (8, 8)})
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, :4], masks[1, 4:] = 1, 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[0.0, 0, 8, 4], [0.0, 4, 8, 8]]), labels=torch.tensor([0, 1]),
                                       masks=BitmapMasks(masks.numpy(), 8, 8))
    info = InstanceData(pos_assigned_gt_inds=torch.arange(positives) % 2, rows=torch.arange(positives) * 3)
    return proto.mask_term([torch.zeros(1, 4, 8, 8)], [sample], [info])


def test_rank_yolact_masks_train_every_positive_unless_capped(monkeypatch):
    """The RS release stores max_masks_to_train 100 but never applies it: None trains every positive's mask; a
    number still draws at most that many per image (mmdet's behaviour)."""
    every = _yolact_mask_term(monkeypatch, None)
    assert every.values.shape == (150,) and every.rows.tolist() == [3 * i for i in range(150)]
    capped = _yolact_mask_term(monkeypatch, 100)
    assert capped.values.shape == (100,) and len(set(capped.rows.tolist())) == 100


def test_no_positives_gives_zero_terms():
    logits = torch.randn(30, 3, requires_grad=True)
    labels = torch.full((30,), 3)
    module = HarnessLoss(loss="rs")
    targets = module.targets(labels, None, 3, quality=torch.zeros(0))
    out = module.head_losses(logits, targets, LocTerm(torch.zeros(0, requires_grad=True), torch.zeros(0, dtype=torch.long)))
    assert float(out.terms["cls"]) == 0 and float(out.terms["bbox"]) == 0
    sum(out.terms.values()).backward()
    assert (logits.grad == 0).all()


def test_standard_head_signature_and_custom_classes():
    module = HarnessLoss(loss="rs")
    logits = torch.randn(10, 3, requires_grad=True)
    labels = torch.tensor([0, 3, 3, 1, 3, 3, 2, 3, 3, 3])
    loss = module(logits, labels, torch.ones(10))
    assert loss.requires_grad and loss.item() > 0
    assert module.get_cls_channels(3) == 3 and module.get_activation(logits).shape == (10, 4)
    with pytest.raises(TypeError, match="needs localisation errors"):
        HarnessLoss(loss="alrp")(logits, labels)
    with pytest.raises(ValueError, match="use_sigmoid"):
        HarnessLoss(loss="rs", use_sigmoid=False)
    with pytest.raises(KeyError, match="valid:"):
        HarnessLoss(loss="nope")


def test_named_aliases_are_mmdet_modules():
    from mmdet.registry import MODELS

    for type_name, loss in (("RankSortLoss", "rs"), ("APLoss", "ap"), ("aLRPLoss", "alrp"), ("HarnessLoss", "rs")):
        module = MODELS.build({"type": type_name, "loss": loss} if type_name == "HarnessLoss" else {"type": type_name})
        assert isinstance(module, HarnessLoss) and module.spec.name == loss


def test_sigmoid_classes_wrapper():
    wrapped = SigmoidClassesLoss(dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 4, 4, 3, 4, 1])  # 4 = background: an all-zero target row
    assert wrapped.get_cls_channels(4) == 4 and wrapped.get_activation(logits)[:, -1].eq(0).all()
    loss = wrapped(logits, labels, torch.ones(6), avg_factor=3)
    assert loss.item() > 0
    with pytest.raises(ValueError):
        SigmoidClassesLoss(dict(type="CrossEntropyLoss", use_sigmoid=False))


def test_all_proposals_sampler_keeps_everything_and_adds_gt():
    from mmdet.models.task_modules.assigners import AssignResult
    from mmengine.structures import InstanceData

    sampler = roi_heads.AllProposalsSampler(add_gt_as_proposals=True)
    gt_inds = torch.tensor([0, 1, 0, 2, -1, 0])
    assign = AssignResult(2, gt_inds, torch.rand(6), labels=torch.tensor([-1, 0, -1, 1, -1, -1]))
    priors = InstanceData(priors=torch.rand(6, 4) * 50)
    gts = InstanceData(bboxes=torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 20, 20]]), labels=torch.tensor([0, 1]))
    result = sampler.sample(assign, priors, gts)
    assert result.pos_inds.numel() == 2 + 2 and result.neg_inds.numel() == 3  # GTs + two positives; ignored dropped


def test_heads_never_read_a_loss_name():
    """The heads' code names no registered loss: behaviour comes from the spec (see test_cells for a new loss
    training every detector)."""
    names = "|".join(re.escape(n) for n in loss_names())
    pattern = re.compile(rf"""["'](?:{names})["']""")
    for module in (dense_heads, roi_heads):
        source = inspect.getsource(module)
        assert not pattern.search(source), (module.__name__, pattern.search(source).group(0))
    source = inspect.getsource(HarnessLoss)
    assert not pattern.search(source) and ".name ==" not in source
