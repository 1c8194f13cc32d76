"""Per-iteration learning-rate schedules (timm), with linear warmup.

Times are counted in optimizer updates (``t_in_epochs=False``); the trainer calls
``scheduler.step_update(num_updates)`` after every update."""

from __future__ import annotations

import torch
from timm.scheduler import CosineLRScheduler, PolyLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from yacs.config import CfgNode


def build_scheduler(config: CfgNode, optimizer: torch.optim.Optimizer, n_iter_per_epoch: int) -> Scheduler:
    """'cosine', 'linear' or 'step' (TRAIN.LR_SCHEDULER.NAME) over TRAIN.EPOCHS epochs of
    ``n_iter_per_epoch`` optimizer updates, after TRAIN.WARMUP_EPOCHS of warmup from WARMUP_LR.

    Group lrs must hold the unscaled base lr: timm multiplies each by its ``lr_scale``."""
    if n_iter_per_epoch < 1:
        raise ValueError(f"n_iter_per_epoch must be >= 1, got {n_iter_per_epoch}")
    for group in optimizer.param_groups:  # undo build_optimizer's pre-scaling of the lr
        group.setdefault("initial_lr", config.TRAIN.BASE_LR)
    num_steps = int(config.TRAIN.EPOCHS * n_iter_per_epoch)
    warmup_steps = int(config.TRAIN.WARMUP_EPOCHS * n_iter_per_epoch)
    common = dict(warmup_t=warmup_steps, warmup_lr_init=config.TRAIN.WARMUP_LR, t_in_epochs=False)
    name = config.TRAIN.LR_SCHEDULER.NAME.lower()
    if name == "cosine":
        scheduler = CosineLRScheduler(
            optimizer,
            t_initial=max(num_steps, 1),
            lr_min=config.TRAIN.MIN_LR,
            cycle_limit=1,
            warmup_prefix=False,
            **common,
        )
    elif name == "linear":  # a polynomial decay of power 1
        scheduler = PolyLRScheduler(
            optimizer,
            t_initial=max(num_steps, 1),
            power=1.0,
            lr_min=config.TRAIN.MIN_LR,
            cycle_limit=1,
            **common,
        )
    elif name == "step":
        decay_steps = int(config.TRAIN.LR_SCHEDULER.DECAY_EPOCHS * n_iter_per_epoch)
        if decay_steps < 1:
            raise ValueError("TRAIN.LR_SCHEDULER.DECAY_EPOCHS must be > 0 for the 'step' scheduler")
        scheduler = StepLRScheduler(
            optimizer, decay_t=decay_steps, decay_rate=config.TRAIN.LR_SCHEDULER.DECAY_RATE, **common
        )
    else:
        raise ValueError(
            f"TRAIN.LR_SCHEDULER.NAME must be 'cosine', 'linear' or 'step', "
            f"got {config.TRAIN.LR_SCHEDULER.NAME!r}"
        )
    scheduler.step_update(0)  # the lr of the very first update
    return scheduler
