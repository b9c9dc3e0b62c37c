"""The harness as an mmdet plug-in: importing this module registers its modules in mmdet's registries.

A config names it with ``custom_imports = dict(imports=['harness.detectors.plugin'])`` (every cell
config does); then ``type='HarnessLoss'`` (or ``'RankSortLoss'``, ``'APLoss'``, ``'aLRPLoss'``),
``'RankATSSHead'``, ``'RankPAAHead'``, ``'RankRPNHead'``, ``'RankBBoxHead'``, ``'DiceMaskHead'``,
``'RankRoIHead'``, ``'RankYOLACTHead'``, ``'RankYOLACTProtonet'``, ``'RankYOLACT'``,
``'RankSOLOv2Head'``, ``'SigmoidClassesLoss'``, ``'AllProposalsSampler'``, ``'CachedAnchorGenerator'``
(:mod:`harness.detectors.anchors`), ``'StemPoolResNet'`` (:mod:`harness.detectors.backbones`),
``'RecipeCheckHook'`` and ``'SelfBalanceHook'`` resolve like mmdet's own, and so does ``'CocoFormatDataset'``
(your own COCO-format files, :mod:`harness.detectors.datasets`).

Importing it also routes mmcv's NMS, RoIAlign and sigmoid focal loss through torchvision / torch
(:mod:`harness.detectors.kernels`), so that no cell needs mmcv's compiled kernels: an mmcv built without
CUDA serves GPU nodes; and it has Mask R-CNN paste its masks into small images in one batch on a CPU
(:mod:`harness.detectors.mask_paste`: mmdet's pixels, fewer operations), and SGD update CPU parameters
in one pass of C (:mod:`harness.detectors.sgd`: torch's values bit for bit).
"""

from harness.detectors import anchors, backbones, datasets, dense_heads, head_loss, hooks, kernels, mask_paste, roi_heads, sgd  # noqa: F401  (registration)

kernels.install()
mask_paste.install()
sgd.install()
