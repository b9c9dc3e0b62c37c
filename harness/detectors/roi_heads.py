"""mmdet 3.x RoI heads whose classification loss comes from the harness loss registry.

* :class:`RankBBoxHead`: the shared-2-fc box head with ``num_classes`` sigmoid logits (no background
  logit), GIoU on decoded boxes (or the recipe's loss), one loss call over every proposal of the batch;
  used by Faster R-CNN, each stage of Cascade R-CNN, and Mask R-CNN;
* :class:`DiceMaskHead`: the FCN mask head with a per-positive Dice loss;
* :class:`RankRoIHead`: the standard RoI head, except that at most ``mask_head.max_positives`` positives
  train the mask head and the mask term is weighed against the box classification by the loss's rule;
* :class:`AllProposalsSampler`: "no sampling": every proposal (and the ground-truth boxes) is used.
"""

from __future__ import annotations

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.models.task_modules.samplers import BaseSampler
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox2roi
from mmdet.structures.mask import mask_target
from torch import Tensor

from harness.detectors.dense_heads import box_targets_and_term
from harness.detectors.head_loss import LocTerm


@TASK_UTILS.register_module()
class AllProposalsSampler(BaseSampler):
    """Keeps every positive and negative (no sampling heuristic); with ``add_gt_as_proposals`` the
    ground-truth boxes join the proposals, as in mmdet's R-CNN recipes."""

    def __init__(self, add_gt_as_proposals: bool = True, **kwargs) -> None:
        super().__init__(num=0, pos_fraction=1.0, neg_pos_ub=-1, add_gt_as_proposals=add_gt_as_proposals)

    def _sample_pos(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds > 0, as_tuple=False).squeeze(-1).unique()

    def _sample_neg(self, assign_result, num_expected, **kwargs) -> Tensor:
        return torch.nonzero(assign_result.gt_inds == 0, as_tuple=False).squeeze(-1).unique()


@MODELS.register_module()
class RankBBoxHead(Shared2FCBBoxHead):
    """Shared-2-fc box head: sigmoid classes from ``loss_cls`` (a ``HarnessLoss``), every proposal of
    the batch in one call, positives' qualities = IoU of their detached decoded box."""

    def loss_terms(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
                   label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor | None = None
                   ) -> tuple[Tensor, LocTerm]:
        """Dense targets and the per-positive box term (rows = RoI rows)."""
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero(as_tuple=True)[0]
        n = bbox_pred.shape[0]
        if self.reg_class_agnostic:
            deltas = bbox_pred.view(n, -1)[pos]
        else:
            deltas = bbox_pred.view(n, self.num_classes, -1)[pos, labels[pos]]
        return box_targets_and_term(self, labels, label_weights, pos, rois[pos, 1:], deltas, bbox_targets[pos])

    def loss_and_target(self, cls_score, bbox_pred, rois, sampling_results, rcnn_train_cfg, concat=True,
                        reduction_override=None) -> dict:
        cls_reg_targets = self.get_targets(sampling_results, rcnn_train_cfg, concat=True)
        targets, term = self.loss_terms(cls_score, bbox_pred, rois, *cls_reg_targets)
        losses = self.loss_cls.head_losses(cls_score, targets, term).as_dict()
        return dict(loss_bbox=losses, bbox_targets=cls_reg_targets)


@MODELS.register_module()
class DiceMaskHead(FCNMaskHead):
    """FCN mask head trained with a per-positive Dice loss; ``max_positives`` bounds the positives a
    :class:`RankRoIHead` feeds it."""

    def __init__(self, *args, max_positives: int = 200,
                 loss_mask: dict = dict(type="DiceLoss", use_sigmoid=True, activate=True, loss_weight=1.0),
                 **kwargs) -> None:
        super().__init__(*args, loss_mask=loss_mask, **kwargs)
        self.max_positives = int(max_positives)

    def dice_values(self, mask_preds: Tensor, mask_targets: Tensor, labels: Tensor) -> Tensor:
        if mask_preds.shape[0] == 0:
            return mask_preds.sum().reshape(1)[:0] * 0.0
        index = torch.zeros_like(labels) if self.class_agnostic else labels
        preds = mask_preds[torch.arange(mask_preds.shape[0], device=mask_preds.device), index]
        return self.loss_mask(preds, mask_targets, reduction_override="none")

    def loss_and_target(self, mask_preds, sampling_results, batch_gt_instances, rcnn_train_cfg) -> dict:
        """Unbalanced mean Dice (for use under mmdet's standard RoI head)."""
        targets = self.get_targets(sampling_results, batch_gt_instances, rcnn_train_cfg)
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        values = self.dice_values(mask_preds, targets, labels)
        loss = values.mean() if values.numel() else mask_preds.sum() * 0.0
        return dict(loss_mask={"loss_mask": loss}, mask_targets=targets)


@MODELS.register_module()
class RankRoIHead(StandardRoIHead):
    """Standard RoI head whose box and mask terms are weighed together by the box head's ``HarnessLoss``;
    at most ``mask_head.max_positives`` positives of the batch, drawn at random, train the mask head."""

    def loss(self, x, rpn_results_list, batch_data_samples) -> dict:
        batch_gt_instances, batch_gt_instances_ignore, _ = unpack_gt_instances(batch_data_samples)
        sampling_results = []
        for i in range(len(batch_data_samples)):
            results = rpn_results_list[i]
            results.priors = results.pop("bboxes")
            assign_result = self.bbox_assigner.assign(results, batch_gt_instances[i], batch_gt_instances_ignore[i])
            sampling_results.append(self.bbox_sampler.sample(assign_result, results, batch_gt_instances[i],
                                                             feats=[lvl[i][None] for lvl in x]))
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        cls_reg_targets = self.bbox_head.get_targets(sampling_results, self.train_cfg, concat=True)
        targets, box = self.bbox_head.loss_terms(bbox_results["cls_score"], bbox_results["bbox_pred"], rois,
                                                 *cls_reg_targets)
        extras = {"mask": self._mask_term(x, sampling_results, batch_gt_instances)} if self.with_mask else {}
        return self.bbox_head.loss_cls.head_losses(bbox_results["cls_score"], targets, box, extras).as_dict()

    def _mask_term(self, x, sampling_results, batch_gt_instances) -> LocTerm:
        counts = [res.pos_priors.shape[0] for res in sampling_results]
        total = sum(counts)
        device = x[0].device
        limit = getattr(self.mask_head, "max_positives", total)
        chosen = torch.arange(total, device=device)
        if total > limit:
            chosen = torch.randperm(total, device=device)[:limit].sort().values
        priors, gt_inds, labels, rows = [], [], [], []
        start = row_offset = 0
        for res, count in zip(sampling_results, counts):
            local = chosen[(chosen >= start) & (chosen < start + count)] - start
            priors.append(res.pos_priors[local])
            gt_inds.append(res.pos_assigned_gt_inds[local])
            labels.append(res.pos_gt_labels[local])
            rows.append(row_offset + local)  # positives come first in each image's block of RoIs
            start += count
            row_offset += res.priors.shape[0]
        # forward even without positives (as mmdet does): the mask head then gets zero gradients, not none,
        # which distributed training needs
        mask_preds = self._mask_forward(x, bbox2roi(priors))["mask_preds"]
        if mask_preds.shape[0] == 0:
            return LocTerm(mask_preds.sum().reshape(1)[:0], torch.zeros(0, dtype=torch.long, device=device))
        targets = mask_target(priors, gt_inds, [gt.masks for gt in batch_gt_instances], self.train_cfg)
        values = self.mask_head.dice_values(mask_preds, targets, torch.cat(labels))
        return LocTerm(values, torch.cat(rows))
