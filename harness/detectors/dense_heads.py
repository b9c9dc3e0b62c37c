"""mmdet 3.x dense heads whose classification loss comes from the harness loss registry.

Every head here flattens the batch (images × anchors or grid cells) into one ``[R, C]`` logit matrix,
builds dense targets with :meth:`HarnessLoss.targets` (the loss's ``targets`` kind decides 1 or the
positive's quality) and hands them, with each positive's localisation loss, to
:meth:`HarnessLoss.head_losses`. Nothing here reads a loss's name.

* :class:`RankATSSHead`: ATSS without its centerness branch;
* :class:`RankPAAHead`: PAA without its IoU branch; Focal and GIoU only inside the GMM anchor scoring;
  score voting kept;
* :class:`RankRPNHead`: the RPN over every anchor (no sampler);
* :class:`RankYOLACTHead`, :class:`RankYOLACTProtonet`, :class:`RankYOLACT`: YOLACT with sigmoid classes
  over every anchor (no OHEM), Dice masks and no semantic-segmentation branch; the detector balances the
  mask term against classification;
* :class:`RankSOLOv2Head`: SOLOv2 whose category targets are the Dice coefficients of the predicted masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from mmdet.models.dense_heads import ATSSHead, PAAHead, RPNHead, SOLOV2Head, YOLACTHead, YOLACTProtonet
from mmdet.models.detectors import YOLACT
from mmdet.models.layers import multiclass_nms
from mmdet.models.utils import levels_to_images, multi_apply, unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from torch import Tensor

from harness.detectors.head_loss import LocTerm


def _sigmoid_loss_cls(kwargs: dict) -> None:
    """mmdet's anchor heads read ``use_sigmoid`` from the loss config to size their classifier."""
    loss_cls = dict(kwargs.get("loss_cls") or {})
    loss_cls["use_sigmoid"] = True
    kwargs["loss_cls"] = loss_cls


def flat_levels(tensors: list[Tensor], channels: int) -> Tensor:
    """Per-level ``[B, A·ch, H, W]`` maps → ``[B, Σ H·W·A, ch]`` in mmdet's anchor order."""
    b = tensors[0].shape[0]
    return torch.cat([t.permute(0, 2, 3, 1).reshape(b, -1, channels) for t in tensors], 1)


def box_targets_and_term(head, labels: Tensor, label_weights: Tensor | None, pos: Tensor, pos_priors: Tensor,
                         pos_deltas: Tensor, pos_box_targets: Tensor) -> tuple[Tensor, LocTerm]:
    """Dense classification targets (positives carry the IoU of their detached decoded box when the loss
    wants qualities) and the per-positive localisation loss of ``head.loss_bbox`` (GIoU on decoded
    boxes when ``head.reg_decoded_bbox``, else on the encoded deltas)."""
    decoded = get_box_tensor(head.bbox_coder.decode(pos_priors, pos_deltas))
    gt = pos_box_targets if head.reg_decoded_bbox else get_box_tensor(head.bbox_coder.decode(pos_priors, pos_box_targets))
    iou = bbox_overlaps(decoded.detach(), gt, is_aligned=True) if pos.numel() else decoded.new_zeros(0)
    targets = head.loss_cls.targets(labels, label_weights, head.num_classes, quality=iou)
    if head.reg_decoded_bbox:
        values = head.loss_bbox(decoded, gt, reduction_override="none")
    else:
        values = head.loss_bbox(pos_deltas, pos_box_targets, reduction_override="none")
    return targets, LocTerm(values, pos)


def dense_targets_and_term(head, anchors: Tensor, deltas: Tensor, labels: Tensor,
                           label_weights: Tensor, box_targets: Tensor) -> tuple[Tensor, LocTerm]:
    pos = ((labels >= 0) & (labels < head.num_classes)).nonzero(as_tuple=True)[0]
    return box_targets_and_term(head, labels, label_weights, pos, anchors[pos], deltas[pos], box_targets[pos])


def flat_dense_batch(head, cls_scores, bbox_preds, anchors: Tensor, labels, label_weights,
                     box_targets) -> tuple[Tensor, Tensor, LocTerm, Tensor]:
    """The whole batch flattened for one classification call: per-level score and box maps plus mmdet's
    ``get_targets`` lists (``[B, n]`` each) → ``(logits, dense targets, box term, flat labels)``;
    ``anchors`` already flat ``[B·n, 4]``."""
    labels = torch.cat(labels, 1).reshape(-1)
    label_weights = torch.cat(label_weights, 1).reshape(-1)
    box_targets = torch.cat(box_targets, 1).reshape(-1, 4)
    logits = flat_levels(cls_scores, head.cls_out_channels).reshape(-1, head.cls_out_channels)
    deltas = flat_levels(bbox_preds, 4).reshape(-1, 4)
    targets, term = dense_targets_and_term(head, anchors, deltas, labels, label_weights, box_targets)
    return logits, targets, term, labels


class _NoCenternessMixin:
    """ATSS-style towers without the centerness / IoU-prediction conv."""

    def _init_layers(self) -> None:
        super()._init_layers()
        del self.atss_centerness

    def forward_single(self, x: Tensor, scale) -> tuple[Tensor, Tensor]:
        cls_feat = reg_feat = x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.atss_cls(cls_feat), scale(self.atss_reg(reg_feat)).float()


@MODELS.register_module()
class RankATSSHead(_NoCenternessMixin, ATSSHead):
    """ATSS head for any registered loss: no centerness branch; one loss call over the batch."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.pop("loss_centerness", None)
        _sigmoid_loss_cls(kwargs)
        super().__init__(*args, **kwargs)
        del self.loss_centerness

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        anchors, labels, label_weights, box_targets, _, _ = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        anchors = torch.cat(anchors, 1).reshape(-1, 4)
        logits, targets, term, labels = flat_dense_batch(self, cls_scores, bbox_preds, anchors, labels,
                                                         label_weights, box_targets)
        return self.loss_cls.head_losses(logits, targets, term).as_dict()


_PAA_SCORING_CLS = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
_PAA_SCORING_BOX = dict(type="GIoULoss", loss_weight=1.3)


def _install_robust_paa_gmm() -> None:
    """mmdet's ``paa_head`` module fits its mixtures through ``skm.GaussianMixture``: install the harness's
    (scikit-learn's values, faster, surviving collapsed samples: :mod:`harness.detectors.mixture`), so that
    mmdet's own PAAHead (the CE and Focal cells) and :class:`RankPAAHead` both use it."""
    from mmdet.models.dense_heads import paa_head

    from harness.detectors.mixture import robust_module

    if not getattr(paa_head.skm, "harness_robust", False):
        paa_head.skm = robust_module()


_install_robust_paa_gmm()


@MODELS.register_module()
class RankPAAHead(_NoCenternessMixin, PAAHead):
    """PAA head for any registered loss: no IoU branch; PAA's GMM anchor scoring keeps Focal + GIoU
    (``gmm_loss_cls``, ``gmm_loss_bbox``); score voting kept; scores are the class sigmoids."""

    def __init__(self, *args, gmm_loss_cls: dict = _PAA_SCORING_CLS, gmm_loss_bbox: dict = _PAA_SCORING_BOX,
                 **kwargs) -> None:
        kwargs.pop("loss_centerness", None)
        _sigmoid_loss_cls(kwargs)
        super().__init__(*args, **kwargs)
        del self.loss_centerness
        self.gmm_loss_cls = MODELS.build(gmm_loss_cls)
        self.gmm_loss_bbox = MODELS.build(gmm_loss_bbox)

    def get_pos_loss(self, anchors, cls_score, bbox_pred, label, label_weight, bbox_target, bbox_weight, pos_inds):
        """PAA's anchor score (Focal + GIoU of each candidate positive), whatever loss trains the head."""
        if not len(pos_inds):
            return (cls_score.new_zeros(0),)
        pos_anchors = torch.cat(anchors, 0)[pos_inds]
        pred = self.bbox_coder.decode(pos_anchors, bbox_pred[pos_inds])
        target = bbox_target[pos_inds]
        if not self.reg_decoded_bbox:
            target = self.bbox_coder.decode(pos_anchors, target)
        loss_cls = self.gmm_loss_cls(cls_score[pos_inds], label[pos_inds], label_weight[pos_inds], avg_factor=1.0,
                                     reduction_override="none")
        loss_bbox = self.gmm_loss_bbox(pred, target, bbox_weight[pos_inds], avg_factor=1.0,
                                       reduction_override="none")
        return (loss_bbox + loss_cls.sum(-1),)

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        labels, labels_weight, boxes_target, boxes_weight, pos_inds, pos_gt_index = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        cls_scores = [s.reshape(-1, self.cls_out_channels) for s in levels_to_images(cls_scores)]
        bbox_preds = [b.reshape(-1, 4) for b in levels_to_images(bbox_preds)]
        pos_losses, = multi_apply(self.get_pos_loss, anchor_list, cls_scores, bbox_preds, labels, labels_weight,
                                  boxes_target, boxes_weight, pos_inds)
        with torch.no_grad():
            labels, labels_weight, _, _ = multi_apply(self.paa_reassign, pos_losses, labels, labels_weight,
                                                      boxes_weight, pos_inds, pos_gt_index, anchor_list)
        logits = torch.cat(cls_scores, 0)
        deltas = torch.cat(bbox_preds, 0)
        anchors = torch.cat([torch.cat(a, 0) for a in anchor_list])
        targets, term = dense_targets_and_term(self, anchors, deltas, torch.cat(labels),
                                               torch.cat(labels_weight), torch.cat(boxes_target))
        return self.loss_cls.head_losses(logits, targets, term).as_dict()

    def _predict_by_feat_single(self, cls_score_list, bbox_pred_list, score_factor_list, mlvl_priors, img_meta,
                                cfg=None, rescale=False, with_nms=True) -> InstanceData:
        cfg = self.test_cfg if cfg is None else cfg
        nms_pre = cfg.get("nms_pre", -1)
        boxes, scores_all = [], []
        for cls_score, bbox_pred, priors in zip(cls_score_list, bbox_pred_list, mlvl_priors):
            scores = cls_score.permute(1, 2, 0).reshape(-1, self.cls_out_channels).sigmoid()
            bbox_pred = bbox_pred.permute(1, 2, 0).reshape(-1, 4)
            if 0 < nms_pre < scores.shape[0]:
                _, keep = scores.max(dim=1).values.topk(nms_pre)
                priors, bbox_pred, scores = priors[keep], bbox_pred[keep], scores[keep]
            boxes.append(self.bbox_coder.decode(priors, bbox_pred, max_shape=img_meta["img_shape"]))
            scores_all.append(scores)
        results = InstanceData(bboxes=torch.cat(boxes), scores=torch.cat(scores_all))
        return self._bbox_post_process(results, cfg, rescale, with_nms, img_meta)

    def _bbox_post_process(self, results, cfg, rescale=False, with_nms=True, img_meta=None) -> InstanceData:
        if rescale:
            results.bboxes /= results.bboxes.new_tensor(img_meta["scale_factor"]).repeat((1, 2))
        scores = torch.cat([results.scores, results.scores.new_zeros(results.scores.shape[0], 1)], dim=1)
        det_bboxes, det_labels = multiclass_nms(results.bboxes, scores, cfg.score_thr, cfg.nms, cfg.max_per_img)
        if self.with_score_voting and len(det_bboxes) > 0:
            det_bboxes, det_labels = self.score_voting(det_bboxes, det_labels, results.bboxes, scores, cfg.score_thr)
        return InstanceData(bboxes=det_bboxes[:, :-1], scores=det_bboxes[:, -1], labels=det_labels)


@MODELS.register_module()
class RankRPNHead(RPNHead):
    """RPN over every anchor of the batch (no sampler), loss from the registry; ``loss_cls.loss_weight``
    weighs all of its terms (0.2 in the RS recipe)."""

    def __init__(self, *args, **kwargs) -> None:
        _sigmoid_loss_cls(kwargs)
        super().__init__(*args, **kwargs)

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        labels, label_weights, box_targets, _, _ = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        anchors = torch.stack([torch.cat(a) for a in anchor_list]).reshape(-1, 4)
        logits, targets, term, labels = flat_dense_batch(self, cls_scores, bbox_preds, anchors, labels,
                                                         label_weights, box_targets)
        return self.loss_cls.head_losses(logits, targets, term).as_dict("loss_rpn_")


@MODELS.register_module()
class RankYOLACTHead(YOLACTHead):
    """YOLACT's box head with sigmoid classes over every anchor of the batch (no OHEM)."""

    def __init__(self, *args, use_ohem: bool = False, **kwargs) -> None:
        if use_ohem:
            raise ValueError("RankYOLACTHead uses every anchor: use_ohem must be False")
        _sigmoid_loss_cls(kwargs)
        super().__init__(*args, use_ohem=False, **kwargs)

    def prepare_losses(self, cls_scores, bbox_preds, coeff_preds, batch_gt_instances, batch_img_metas,
                       batch_gt_instances_ignore=None) -> tuple[Tensor, Tensor, LocTerm]:
        """Logits, dense targets and the box term; remembers what :meth:`get_positive_infos` needs."""
        featmap_sizes = [f.size()[-2:] for f in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        labels, label_weights, box_targets, _, _, sampling_results = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore, unmap_outputs=True, return_sampling_results=True)
        num_imgs = len(batch_img_metas)
        anchors = torch.stack([torch.cat(a) for a in anchor_list]).reshape(-1, 4)
        logits, targets, term, labels = flat_dense_batch(self, cls_scores, bbox_preds, anchors, labels,
                                                         label_weights, box_targets)
        self._raw_positive_infos.update(coeff_preds=coeff_preds, labels=labels.view(num_imgs, -1))
        return logits, targets, term

    def loss_by_feat(self, cls_scores, bbox_preds, coeff_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        logits, targets, term = self.prepare_losses(cls_scores, bbox_preds, coeff_preds, batch_gt_instances,
                                                    batch_img_metas, batch_gt_instances_ignore)
        return self.loss_cls.head_losses(logits, targets, term).as_dict()

    def get_positive_infos(self):
        """Per image: positives (indices over all anchors, as the logits' rows), their coefficients, GT
        indices and boxes; ``rows`` are their rows in the batch's flattened logits."""
        sampling_results = self._raw_positive_infos["sampling_results"]
        labels = self._raw_positive_infos["labels"]
        coeffs = flat_levels(self._raw_positive_infos["coeff_preds"], self.num_protos)
        per_image = labels.shape[1]
        infos = []
        for idx, result in enumerate(sampling_results):
            pos = ((labels[idx] >= 0) & (labels[idx] < self.num_classes)).nonzero(as_tuple=True)[0]
            info = InstanceData()
            info.pos_assigned_gt_inds = result.pos_assigned_gt_inds
            info.pos_inds = pos
            info.coeffs = coeffs[idx][pos]
            info.bboxes = result.pos_gt_bboxes
            info.rows = pos + idx * per_image
            infos.append(info)
        return infos


@MODELS.register_module()
class RankYOLACTProtonet(YOLACTProtonet):
    """YOLACT's protonet with a Dice loss on the cropped masks and no semantic-segmentation branch."""

    def __init__(self, *args, loss_mask: dict | None = None, with_seg_branch: bool = False, **kwargs) -> None:
        super().__init__(*args, with_seg_branch=with_seg_branch, **kwargs)
        self.loss_mask = MODELS.build(loss_mask or dict(type="DiceLoss", use_sigmoid=True, activate=False,
                                                        loss_weight=1.0))

    def mask_term(self, x, batch_data_samples, positive_infos) -> LocTerm:
        """Per-positive Dice losses with their logit rows: every positive, or at most ``max_masks_to_train``
        per image drawn at random when that is a number (``None``: no cap)."""
        mask_preds, _ = self(x, positive_infos)
        batch_gt_instances, _, batch_img_metas = unpack_gt_instances(batch_data_samples)
        cropped = self.crop_mask_preds(mask_preds, batch_img_metas, positive_infos)
        cap = self.max_masks_to_train
        values, rows = [], []
        for preds, gt, info in zip(cropped, batch_gt_instances, positive_infos):
            n = info.pos_assigned_gt_inds.numel()
            if n == 0 or len(gt) == 0:
                continue
            sel = torch.randperm(n, device=preds.device)[:cap] if cap is not None and n > cap \
                else torch.arange(n, device=preds.device)
            h, w = preds.shape[-2:]
            gt_masks = gt.masks.to_tensor(dtype=torch.bool, device=preds.device).float()
            gt_masks = F.interpolate(gt_masks.unsqueeze(0), (h, w), mode="bilinear", align_corners=False)
            target = gt_masks.squeeze(0).gt(0.5).float()[info.pos_assigned_gt_inds[sel]]
            values.append(self.loss_mask(torch.clamp(preds[sel], 0, 1), target, reduction_override="none"))
            rows.append(info.rows[sel])
        if not values:
            anchor = mask_preds[0] if mask_preds else x[0]
            return LocTerm(anchor.sum().reshape(1)[:0] * 0.0, torch.zeros(0, dtype=torch.long, device=x[0].device))
        return LocTerm(torch.cat(values), torch.cat(rows))

    def loss_by_feat(self, mask_preds, segm_preds, batch_gt_instances, batch_img_metas, positive_infos, **kwargs):
        raise NotImplementedError("RankYOLACTProtonet's mask term is computed and balanced by RankYOLACT.loss")


@MODELS.register_module()
class RankYOLACT(YOLACT):
    """YOLACT whose box head and protonet losses are weighed together by the head's ``HarnessLoss``."""

    def loss(self, batch_inputs, batch_data_samples, **kwargs) -> dict:
        x = self.extract_feat(batch_inputs)
        outs = self.bbox_head(x)
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        logits, targets, box = self.bbox_head.prepare_losses(*outs, batch_gt_instances, batch_img_metas,
                                                             batch_gt_instances_ignore)
        infos = self.bbox_head.get_positive_infos()
        mask = self.mask_head.mask_term(x, batch_data_samples, infos)
        return self.bbox_head.loss_cls.head_losses(logits, targets, box, {"mask": mask}).as_dict()


@MODELS.register_module()
class RankSOLOv2Head(SOLOV2Head):
    """SOLOv2 head for any registered loss: one call over every grid cell of the batch; a positive's
    quality is the Dice coefficient of its predicted mask with its ground truth; its Dice loss is the
    localisation term. A grid cell claimed by two instances keeps the last one (as its label does)."""

    def loss_by_feat(self, mlvl_kernel_preds, mlvl_cls_preds, mask_feats, batch_gt_instances, batch_img_metas,
                     **kwargs) -> dict:
        featmap_sizes = mask_feats.size()[-2:]
        pos_mask_targets, labels, _, pos_indexes = multi_apply(self._get_targets_single, batch_gt_instances,
                                                               featmap_sizes=featmap_sizes)
        num_imgs = len(batch_gt_instances)
        h, w = mask_feats.shape[-2:]
        values, rows = [], []
        offset = 0
        for lvl, kernel_preds in enumerate(mlvl_kernel_preds):
            cells = self.num_grids[lvl] ** 2
            for img in range(num_imgs):
                index = pos_indexes[img][lvl]
                if len(index) == 0:
                    continue
                last = {cell: k for k, cell in enumerate(index)}  # a cell claimed twice keeps the last instance
                keep = sorted(last.values())
                idx = torch.as_tensor([index[k] for k in keep], dtype=torch.long, device=mask_feats.device)
                target = pos_mask_targets[img][lvl][keep]
                kernels = kernel_preds[img].reshape(kernel_preds.shape[1], -1)[:, idx]
                pred = F.conv2d(mask_feats[[img]], kernels.permute(1, 0).reshape(
                    idx.numel(), -1, self.dynamic_conv_size, self.dynamic_conv_size), stride=1).reshape(-1, h, w)
                values.append(self.loss_mask(pred, target, reduction_override="none"))
                rows.append(offset + img * cells + idx)
            offset += num_imgs * cells
        flat_labels = torch.cat([torch.cat([labels[img][lvl].flatten() for img in range(num_imgs)])
                                 for lvl in range(len(mlvl_cls_preds))])
        logits = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels) for p in mlvl_cls_preds])
        if values:
            values, rows = torch.cat(values), torch.cat(rows)
        else:
            values = mask_feats.sum().reshape(1)[:0] * 0.0
            rows = torch.zeros(0, dtype=torch.long, device=mask_feats.device)
        weight = getattr(self.loss_mask, "loss_weight", 1.0) or 1.0
        quality = (1.0 - values.detach() / weight)[torch.argsort(rows)]
        targets = self.loss_cls.targets(flat_labels, None, self.num_classes, quality=quality)
        return self.loss_cls.head_losses(logits, targets, LocTerm(values, rows), primary_name="mask").as_dict()
