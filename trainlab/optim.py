"""torch.optim optimisers and lr_scheduler schedules, built from the config; the optimiser step train() takes."""

from __future__ import annotations

import math
import sys
from typing import Iterable, Optional

import torch
from torch.optim import lr_scheduler
from torch.optim.optimizer import (_device_dtype_check_for_fused, _global_optimizer_post_hooks,
                                   _global_optimizer_pre_hooks)

from .config import Config


def parameter_groups(cfg: Config, model: torch.nn.Module) -> Iterable:
    """What the optimiser updates: all parameters, or for gpt two groups by rank (weight decay on
    matrices and embeddings only, nanoGPT's rule); the decay is optim.weight_decay or torch's default."""
    if cfg.model.name != "gpt":
        return model.parameters()
    from .gpt import decay_groups
    decay = cfg.optim.weight_decay
    if decay is None:
        decay = 0.01 if cfg.optim.name == "adamw" else 0.0  # torch.optim's defaults
    return decay_groups(model, decay)


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


def step_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step(), then every gradient set to None (zero_grad(set_to_none=True)).

    For torch.optim.SGD(fused=True), the default, every step calls the fused kernel exactly as
    torch.optim.sgd._fused_sgd does (the same arguments, the momentum buffers created on the first
    step and kept in optimizer.state), without Optimizer.step's Python wrapper (profiler record,
    hooks, grouping by device, and an import of torch._dynamo: 1.2-1.7 s on the first step): about
    55 us less per step on this CPU, a twentieth of a batch-64 step of the seed MLP. The result is
    bitwise torch.optim's (tests/test_optim.py). Optimisers with hooks, tensor lrs, grad scaling or
    anything unusual go through optimizer.step().
    """
    if not _fused_sgd_step(optimizer):
        optimizer.step()
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


def _fused_sgd_step(optimizer: torch.optim.Optimizer) -> bool:
    """One torch._fused_sgd_ call per param group; False (nothing changed) where it does not apply."""
    if (type(optimizer) is not torch.optim.SGD or getattr(optimizer, "grad_scale", None) is not None
            or getattr(optimizer, "found_inf", None) is not None or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks or _global_optimizer_pre_hooks or _global_optimizer_post_hooks):
        return False
    calls = []
    for group in optimizer.param_groups:
        if not group["fused"] or group["differentiable"] or isinstance(group["lr"], torch.Tensor):
            return False
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        if len({(g.device, g.dtype) for g in grads}) > 1 or any(g.is_sparse for g in grads):
            return False
        buffers, first_step = [], False
        if group["momentum"] != 0:
            buffers = [optimizer.state[p].get("momentum_buffer") for p in params]
            first_step = all(b is None for b in buffers)
            if first_step:  # torch.optim's first step: unset buffers, filled by the kernel
                for p in params:
                    _device_dtype_check_for_fused(p)  # the check SGD.step makes on its first call
                buffers = [torch.empty_like(g) for g in grads]
            elif any(b is None for b in buffers):  # some parameters new to the optimiser
                return False
        calls.append((params, grads, buffers, group, first_step))
    with torch.no_grad():
        for params, grads, buffers, group, first_step in calls:
            torch._fused_sgd_(params, grads, buffers, weight_decay=group["weight_decay"],
                              momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                              nesterov=group["nesterov"], maximize=group["maximize"], is_first_step=first_step)
            for p, buffer in zip(params, buffers):
                optimizer.state[p]["momentum_buffer"] = buffer
    if hasattr(optimizer.step, "_wrapped_by_lr_sched"):
        # What an lr scheduler's wrapper of optimizer.step records, so that its first step() knows
        # the optimiser stepped first (and does not warn that it was called before optimizer.step()).
        optimizer._opt_called = True
    return True


def _defer_dynamo_import() -> None:
    """Keep torch.optim's methods from importing torch._dynamo while nothing can be compiling.

    Optimizer.add_param_group, state_dict, load_state_dict and zero_grad are wrapped by
    torch._disable_dynamo, which imports torch._dynamo (1.2-1.7 s here, a third of a `trainlab
    train --smoke` run) on the first call to build the wrapper it then caches on the function as
    `__dynamo_disable`. Until torch._dynamo is imported no frame can be under compilation, so
    torch._dynamo.disable(fn) would only call fn: this puts a stand-in into that cache which calls
    fn directly until torch._dynamo is imported (train.compile, or anyone else), and from then on
    builds, caches and calls torch's own disabled wrapper, exactly as the first call would have.
    """
    if "torch._dynamo" in sys.modules:
        return
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        fn = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if fn is not None and getattr(fn, "__dynamo_disable", None) is None:
            setattr(fn, "__dynamo_disable", _until_dynamo_loads(fn))


def _until_dynamo_loads(fn):
    def call(*args, **kwargs):
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        disabled = sys.modules["torch._dynamo"].disable(fn, True, wrapping=False)  # torch's own wrapper
        setattr(fn, "__dynamo_disable", disabled)
        return disabled(*args, **kwargs)

    return call


_defer_dynamo_import()


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int
                    ) -> Optional[lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau]:
    """The schedule `schedule.name` names, stepped once per optimiser step.

    Every schedule counts optimiser steps so that warm-up can be fractional and resume is exact
    mid-epoch; the per-epoch ones (step, exponential) are StepLR with a step size of whole epochs,
    which is exactly the per-epoch schedule. reduce_on_plateau alone is stepped once per epoch,
    with the monitored validation value. Returns None for a constant lr without warm-up.
    """
    s = cfg.schedule
    total = cfg.train.steps or steps_per_epoch * cfg.train.epochs
    warmup = s.warmup_steps if s.warmup_steps is not None else int(round(s.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total - 1)
    if s.name == "reduce_on_plateau":
        mode = "max" if higher_is_better(cfg.train.monitor) else "min"
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


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics improve upwards; losses and errors downwards ("val.accuracy" or "accuracy")."""
    metric = metric.split(".", 1)[-1]
    return not any(word in metric for word in ("loss", "error", "mse", "mae", "rmse"))


def is_better(value: float, best: Optional[float], monitor: str, min_delta: float = 0.0) -> bool:
    """Whether `value` of `monitor` improves on `best` by more than min_delta."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if higher_is_better(monitor) else value < best - min_delta
