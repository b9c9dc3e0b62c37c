"""mmengine hooks of a cell's config: the recipe's total-batch check and the self-balance epoch update."""

from __future__ import annotations

import warnings

from mmengine.hooks import Hook
from mmdet.registry import HOOKS


def batch_warning(recipe_total: int | None, batch_per_gpu: int, world_size: int, accumulate: int = 1) -> str | None:
    """The warning to give when a run's total batch (processes x images a process x iterations accumulated
    into one optimizer step) differs from its recipe's (``None`` when equal)."""
    total = batch_per_gpu * world_size * accumulate
    if recipe_total and total != recipe_total:
        return (f"total batch {total} ({world_size} process(es) x {batch_per_gpu} images x {accumulate} accumulated) "
                f"differs from the recipe's {recipe_total}: ranking-loss results depend on it (RankSortLoss#13, "
                f"aLRPLoss#10); a spec's run keeps the recipe's with schedule.accumulate auto, or scales the lr "
                f"linearly when it changes the batch on purpose")
    return None


@HOOKS.register_module(force=True)
class RecipeCheckHook(Hook):
    """Warns before training when the run's total batch (or lr) differs from the cell's recipe."""

    priority = "VERY_LOW"

    def __init__(self, total_batch: int | None = None, lr: float | None = None) -> None:
        self.total_batch = total_batch
        self.lr = lr

    def before_train(self, runner) -> None:
        from mmengine.dist import get_world_size

        accumulate = int(getattr(getattr(runner, "optim_wrapper", None), "_accumulative_counts", 1) or 1)
        message = batch_warning(self.total_batch, _batch_per_process(runner), get_world_size(), accumulate)
        if message:
            warnings.warn(message, stacklevel=2)
            runner.logger.warning(message)
        lr = _configured_lr(runner)
        if self.lr and lr is not None and abs(lr - self.lr) > 1e-12:
            runner.logger.info(f"learning rate {lr:g} (the recipe's: {self.lr:g})")


def _batch_per_process(runner) -> int:
    """Images per process and iteration: the loader's batch size, else its batch sampler's, else the config's."""
    loader = runner.train_dataloader
    size = getattr(loader, "batch_size", None) or getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    if not size:
        size = (runner.cfg.get("train_dataloader") or {}).get("batch_size")
    return int(size or 0)


def _configured_lr(runner) -> float | None:
    try:
        return float(runner.cfg.optim_wrapper.optimizer.lr)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


@HOOKS.register_module(force=True)
class SelfBalanceHook(Hook):
    """Once per epoch, every ``HarnessLoss`` of the model closes its self-balance epoch (aLRP's SB weight
    becomes (mean L_loc + mean L_cls) / mean L_loc); under distributed training the new weights are
    averaged over processes. A no-op for losses without self-balance."""

    priority = "NORMAL"

    def after_train_epoch(self, runner) -> None:
        import torch
        from mmengine.dist import all_reduce, get_world_size
        from mmengine.model import is_model_wrapper

        from harness.detectors.head_loss import HarnessLoss

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for name, module in model.named_modules():
            if not isinstance(module, HarnessLoss) or not module.self_balance:
                continue
            weights = module.epoch_end()
            if get_world_size() > 1:
                keys = sorted(weights)
                t = torch.tensor([weights[k] for k in keys], dtype=torch.float64)
                all_reduce(t, op="mean")
                for k, v in zip(keys, t.tolist()):
                    module.self_balance[k].weight = v
                    weights[k] = v
            text = ", ".join(f"{k}={v:.3f}" for k, v in sorted(weights.items()))
            runner.logger.info(f"self-balance weights of {name}: {text}")
