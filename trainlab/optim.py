"""torch.optim optimisers and lr_scheduler schedules, built from the config."""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch.optim import lr_scheduler

from .config import Config


def build_optimizer(cfg: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser `optim.name` names; unused keys were already warned about by the config.

    gd and sgd are both torch.optim.SGD: what differs is the batch (the whole training split for gd).
    """
    o = cfg.optim
    # Keys left unset (None) are not passed, so torch.optim's own defaults apply.
    optional = {k: v for k, v in (("weight_decay", o.weight_decay), ("eps", o.eps)) if v is not None}
    if o.fused and o.name != "rmsprop":  # RMSprop has no fused kernel
        optional["fused"] = True
    if o.name in ("gd", "sgd", "momentum"):
        momentum = o.momentum if o.momentum is not None else (0.9 if o.name == "momentum" else 0.0)
        optional.pop("eps", None)
        return torch.optim.SGD(params, lr=o.lr, momentum=momentum, nesterov=o.nesterov and momentum > 0,
                               **optional)
    if o.name == "adagrad":
        return torch.optim.Adagrad(params, lr=o.lr, **optional)
    if o.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, momentum=o.momentum or 0.0, **optional)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, **optional)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, **optional)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> Optional[lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau]:
    """The schedule `schedule.name` names, stepped once per optimiser step.

    Every schedule counts optimiser steps so that warm-up can be fractional and resume is exact
    mid-epoch; the per-epoch ones (step, exponential) are StepLR with a step size of whole epochs,
    which is exactly the per-epoch schedule. reduce_on_plateau alone is stepped once per epoch,
    with the monitored validation value. Returns None for a constant lr without warm-up.
    """
    s = cfg.schedule
    total = steps_per_epoch * cfg.train.epochs
    warmup = min(int(round(s.warmup_epochs * steps_per_epoch)), total - 1)
    if s.name == "reduce_on_plateau":
        mode = "max" if _maximise(cfg.train.monitor) else "min"
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=s.gamma, patience=s.patience)
    if s.name == "onecycle":
        # The scheduler is stepped after every optimiser step, so it sees total + 1 positions and the
        # last step lands on the schedule's end. OneCycleLR needs two or more positions per phase
        # (it divides by the phase length - 1): pct_start is kept inside that bound for very short
        # runs (e.g. --smoke).
        positions = max(total, 4) + 1
        pct = min(max(s.pct_start, 2.0 / positions), 1.0 - 2.0 / positions)
        return lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.optim.lr, total_steps=positions, pct_start=pct)
    if s.name == "constant":
        main = None
    elif s.name == "step":
        main = lr_scheduler.StepLR(optimizer, step_size=s.step_epochs * steps_per_epoch, gamma=s.gamma)
    elif s.name == "exponential":
        main = lr_scheduler.StepLR(optimizer, step_size=steps_per_epoch, gamma=s.gamma)
    else:  # cosine, over the steps after warm-up
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=s.min_lr)
    if warmup <= 0:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=s.warmup_start, end_factor=1.0, total_iters=warmup)
    if main is None:
        return warm  # LinearLR holds the final factor (1.0) after total_iters
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def _maximise(monitor: str) -> bool:
    """Accuracy-like metrics improve upwards; losses and errors downwards."""
    metric = monitor.split(".", 1)[1]
    return not any(word in metric for word in ("loss", "error", "mse", "mae", "rmse"))


def is_better(value: float, best: Optional[float], monitor: str, min_delta: float = 0.0) -> bool:
    """Whether `value` of `monitor` improves on `best` by more than min_delta."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if _maximise(monitor) else value < best - min_delta
