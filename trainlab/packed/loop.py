"""The pack's training loop: train_packed, its set-up, one epoch over the pack's batches, each member's epoch end."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .. import data, losses
from ..config import Config, save_config
from ..data.loader import make_batches
from ..errors import ConfigError
from ..models import build_model
from ..optim import build_optimizer, build_scheduler, is_better
from ..runs import RunDir
from ..train import Result, autocast_for, format_row, prepare_config, resolve_device
from .finish import finish_runs
from .key import PER_MEMBER_KEYS, pack_key
from .model import Member, PackedMLP, bind, shrink
from .optimizer import StackedOptimizer, clip_stacked
from .passes import PackTotals, Shared, batch_scores, evaluate_pack, member_losses, pack_batches


def train_packed(configs: Sequence[Config | dict | str | Path], *, outs: Optional[Sequence] = None,
                 data_dir: Optional[str] = None, splits: Optional[data.Splits] = None,
                 on_epoch_end: Optional[Callable[[int, int, dict], object]] = None,
                 exact_step: bool = False) -> list[Result]:
    """Train K configs that share pack_key() as one computation; one Result per config, in order.

    >>> cfgs = [load_config("examples/seed_mlp.yaml", [f"optim.lr={lr}"]) for lr in (0.01, 0.03, 0.1)]
    >>> results = train_packed(cfgs, outs=[f"runs/lr{lr}" for lr in (0.01, 0.03, 0.1)])
    >>> [r.metrics["val"]["accuracy"] for r in results]

    `outs`: each member's run directory (default runs/<name>-<timestamp>, as train()).
    `splits`: data already loaded (and split) for every member, e.g. without a test split.
    `on_epoch_end(index, epoch, row)`: after each member's epoch row is written; returning True
    stops that member there (pruning): its summary says stopped_because "pruned".
    `exact_step`: step each member with its own torch.optim optimiser (bitwise torch.optim's
    update, slower: K optimiser calls per step) instead of StackedOptimizer's one pass.
    """
    cfgs = [prepare_config(c) for c in configs]
    if not cfgs:
        return []
    outs = _check_pack(cfgs, outs)
    shared = _load(cfgs, data_dir, splits)
    members = _start_members(cfgs, outs, shared)
    pack = PackedMLP([m.module for m in members], cfgs[0].model.activation,
                     [m.cfg.model.dropout for m in members], [m.generator for m in members])
    bind(pack, members)
    stacked_opt = _build_optimizers(members, pack, shared, exact_step)
    shared.say(f"pack of {len(members)}: {len(shared.splits.train)} training examples, "
               f"{len(shared.train_batches)} steps per epoch, device {shared.device.type}")
    active = list(members)
    epoch = 1
    start = time.perf_counter()
    while active:
        train, diverged, seconds = _train_epoch(pack, active, shared, stacked_opt, epoch)
        val = evaluate_pack(pack, shared.val_batches, active, shared) if shared.val_batches is not None else None
        done = _Epoch(epoch, seconds, len(active), train, val, diverged)
        leaving = [j for j, m in enumerate(active) if _end_epoch(m, j, done, shared, on_epoch_end)]
        shared.say(f"pack of {done.size}: "
                   + format_row({"epoch": epoch, "seconds": seconds}, max(m.cfg.train.epochs for m in active))
                   + (f"  {len(leaving)} leave" if leaving else ""))
        if leaving:
            pack, active = _leave(pack, active, leaving, stacked_opt)
        epoch += 1
    return finish_runs(members, shared, time.perf_counter() - start)


# ---------------------------------------------------------------- set-up


def _check_pack(cfgs: list[Config], outs: Optional[Sequence]) -> list:
    """The configs share one pack key and have one output folder each; returns the folders."""
    keys = {pack_key(c) for c in cfgs}
    if None in keys:
        raise ConfigError("train_packed packs model.name=mlp without batch_norm or train.compile; "
                          f"got model.name={cfgs[0].model.name}. Use train() for other models.")
    if len(keys) > 1:
        raise ConfigError("These configs cannot share a pack: they differ in more than the per-member keys "
                          f"({', '.join(PER_MEMBER_KEYS)}). Group them with trainlab.packed.pack_key().")
    outs = list(outs) if outs is not None else [None] * len(cfgs)
    if len(outs) != len(cfgs):
        raise ConfigError(f"train_packed got {len(cfgs)} configs but {len(outs)} output folders.")
    return outs


def _load(cfgs: list[Config], data_dir: Optional[str], splits: Optional[data.Splits]) -> Shared:
    """Threads, device, dtype, the data and its batches, and every member's loss function."""
    first = cfgs[0]
    if first.train.threads:
        torch.set_num_threads(first.train.threads)
    device = resolve_device(first.train.device)
    dtype = getattr(torch, first.train.dtype)
    splits = splits if splits is not None else data.load(first, data_dir)
    loss_name = losses.resolve_name(first, splits.task, splits.num_classes)
    smoothing = {c.loss.label_smoothing for c in cfgs}
    batch_size = len(splits.train) if first.optim.name == "gd" else first.train.batch_size
    return Shared(
        splits=splits, device=device, dtype=dtype, autocast=autocast_for(first, device), loss_name=loss_name,
        loss_fns=[losses.build_loss(c, splits.task, splits.num_classes) for c in cfgs],
        fast_ce=smoothing.pop() if loss_name == "cross_entropy" and len(smoothing) == 1 else None,
        y_std=splits.extra.get("target_std", 1.0),
        train_batches=make_batches(splits, "train", batch_size, device, dtype, first, train=True),
        val_batches=make_batches(splits, "val", first.eval.batch_size, device, dtype, first),
        quiet=first.train.progress == "none")


def _start_members(cfgs: list[Config], outs: list, shared: Shared) -> list[Member]:
    """Each member's run directory (config.yaml written), initial weights and dropout stream: exactly
    what train() would start from."""
    splits, device = shared.splits, shared.device
    n_out = losses.num_outputs(shared.loss_name, splits.task, splits.num_classes)
    runs = [RunDir.create(out, cfg.name) for out, cfg in zip(outs, cfgs)]
    for cfg, run in zip(cfgs, runs):
        save_config(cfg, run.config)
    members = []
    for i, (cfg, run) in enumerate(zip(cfgs, runs)):
        torch.manual_seed(cfg.train.seed)
        module = build_model(cfg.model, splits.input_shape, n_out)
        generator = None
        if cfg.model.dropout > 0:
            generator = torch.Generator(device=device)
            if device.type == "cpu":
                generator.set_state(torch.get_rng_state())
            else:  # CUDA dropout is a fused kernel: masks cannot equal a separate run's anyway
                generator.manual_seed(cfg.train.seed)
        module = module.to(device=device, dtype=shared.dtype)
        names = [n for n, _ in module.named_parameters()]
        members.append(Member(index=i, cfg=cfg, run=run, module=module, generator=generator, names=names))
    return members


def _build_optimizers(members: list[Member], pack: PackedMLP, shared: Shared,
                      exact_step: bool) -> Optional[StackedOptimizer]:
    """Each member's torch.optim optimiser and schedule, as train() builds them, on its slices; the
    StackedOptimizer that steps them all in one pass, or None when each steps its own."""
    for m in members:
        m.optimizer = build_optimizer(m.cfg, m.params)
        m.scheduler = build_scheduler(m.cfg, m.optimizer, len(shared.train_batches))
        m.plateau = isinstance(m.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if m.cfg.train.monitor.startswith("val.") and shared.val_batches is None:
            raise ConfigError(f"train.monitor={m.cfg.train.monitor} needs a validation split, but "
                              "data.val_fraction=0. Set data.val_fraction > 0 or train.monitor=train.loss.")
    if exact_step or not StackedOptimizer.supports([m.optimizer for m in members]):
        return None
    return StackedOptimizer([m.optimizer for m in members], pack.parameters())


# ---------------------------------------------------------------- one epoch


def _train_epoch(pack: PackedMLP, active: list[Member], shared: Shared, stacked_opt: Optional[StackedOptimizer],
                 epoch: int) -> tuple[PackTotals, list[Optional[tuple[int, float]]], float]:
    """One epoch over the pack's batches: (training totals, each member's divergence, seconds).

    A member's divergence is None, or the step (counted from 1) and loss of its first non-finite loss.
    """
    k, steps, device = len(active), len(shared.train_batches), shared.device
    seeds = [m.cfg.train.seed for m in active]
    l1 = _strengths([m.cfg.regularize.l1 for m in active], shared.dtype, device)  # (K,) or None
    l2 = _strengths([m.cfg.regularize.l2 for m in active], shared.dtype, device)
    any_penalty = l1 is not None or l2 is not None
    fns = [shared.loss_fns[m.index] for m in active]
    clips = [m.cfg.train.clip_grad_norm for m in active]
    clip = None if all(c is None for c in clips) else torch.tensor(
        [c if c is not None else math.inf for c in clips], dtype=torch.float64, device=device)
    stepped = [m for m in active if m.scheduler is not None and not m.plateau]
    # Per-step results stay on the device, (K, steps): one host synchronisation per epoch.
    step_losses = torch.zeros(k, steps, device=device, dtype=torch.float64)
    step_scores = torch.zeros(k, steps, device=device, dtype=torch.float64)  # hits or |error|
    stacked = pack.parameters()
    t0 = time.perf_counter()
    # x: (B, *shape) read by every member when shared_x, else (K, B, *shape) gathered per member
    for step, (x, y, shared_x) in enumerate(pack_batches(shared.train_batches, seeds, epoch)):
        y = y.expand(k, -1) if shared_x else y                           # (K, B)
        with shared.autocast:
            output = pack.forward(x, shared_x, training=True)            # (K, B, C)
            loss = member_losses(output, y, fns, shared.fast_ce)         # (K,)
        objective = loss.sum() + pack.penalty(l1, l2) if any_penalty else loss.sum()
        objective.backward()
        _update(stacked, active, stacked_opt, clip, clips)
        for m in stepped:
            m.scheduler.step()
        step_losses[:, step] = loss.detach()
        step_scores[:, step] = batch_scores(output.detach(), y, shared.splits.task, shared.loss_name)
    totals = PackTotals.from_steps(step_losses, step_scores, shared.train_batches.batch_sizes(), shared.splits.task)
    bad = ~torch.isfinite(step_losses)
    diverged = bad.any(1).tolist()   # the one host synchronisation of the epoch
    seconds = time.perf_counter() - t0
    where: list[Optional[tuple[int, float]]] = [None] * k
    for j in (j for j, d in enumerate(diverged) if d):
        first_bad = int(bad[j].nonzero()[0, 0])
        where[j] = (first_bad + 1, float(step_losses[j, first_bad]))
    return totals, where, seconds


def _strengths(values: list[float], dtype: torch.dtype, device: torch.device) -> Optional[torch.Tensor]:
    """(K,) penalty strengths, or None when no member has one."""
    return torch.tensor(values, dtype=dtype, device=device) if any(values) else None


def _update(stacked: list[torch.Tensor], active: list[Member], stacked_opt: Optional[StackedOptimizer],
            clip: Optional[torch.Tensor], clips: list[Optional[float]]) -> None:
    """Every member's optimiser step from the stacked gradients (clipped per member), then no gradients."""
    grads = [t.grad for t in stacked]
    if stacked_opt is not None:   # every member's torch.optim rule in one pass
        if clip is not None:
            clip_stacked(grads, clip)
        stacked_opt.step(stacked, grads)
    else:                         # each member's own torch.optim step on its slices
        for j, m in enumerate(active):
            for p, g in zip(m.params, grads):
                p.grad = g[j]
            if clips[j] is not None:
                torch.nn.utils.clip_grad_norm_(m.params, clips[j])
            m.optimizer.step()
    for t in stacked:
        t.grad = None


@dataclass
class _Epoch:
    """One finished epoch of the pack, as each member's row needs it."""

    number: int
    seconds: float                                # the pack's wall time for its training steps
    size: int                                     # members trained together
    train: PackTotals
    val: Optional[PackTotals]
    diverged: list[Optional[tuple[int, float]]]   # per member: None, or (step, loss) where it diverged


def _end_epoch(m: Member, j: int, done: _Epoch, shared: Shared,
               on_epoch_end: Optional[Callable[[int, int, dict], object]]) -> bool:
    """Member m (row j of the pack): its metrics row, best weights, plateau schedule, early stopping
    and pruning; returns whether it leaves the pack."""
    m.global_step += len(shared.train_batches)
    m.seconds += done.seconds
    if done.diverged[j] is not None:
        m.diverged_at = (done.number, *done.diverged[j])
        m.stopped_because = "diverged"
        return True
    epoch = done.number
    row = {"epoch": epoch, "step": m.global_step, "lr": m.optimizer.param_groups[0]["lr"],
           "seconds": done.seconds, "pack_size": done.size}
    row.update({f"train_{key}": v for key, v in done.train.result(j, shared.y_std).items()})
    if done.val is not None:
        row.update({f"val_{key}": v for key, v in done.val.result(j, shared.y_std).items()})
    m.history.append(row)
    m.run.write_metrics(m.history)
    split, metric = m.cfg.train.monitor.split(".", 1)
    value = row.get(f"{split}_{metric}")
    if value is None:
        raise ConfigError(f"train.monitor={m.cfg.train.monitor} is not a metric of this run; it has "
                          f"{', '.join(key.replace('_', '.', 1) for key in row if '_' in key)}.")
    if is_better(value, m.best_value, m.cfg.train.monitor, m.cfg.train.early_stopping.min_delta):
        m.best_value, m.best_epoch, m.bad_epochs = value, epoch, 0
        m.best_state = m.state_dict()
    else:
        m.bad_epochs += 1
    if m.plateau:
        m.scheduler.step(value)
    patience = m.cfg.train.early_stopping.patience
    if patience is not None and m.bad_epochs >= patience:
        m.stopped_because = "early_stopping"
    elif epoch >= m.cfg.train.epochs:
        m.stopped_because = "epochs"
    if on_epoch_end is not None and on_epoch_end(m.index, epoch, row) and m.stopped_because is None:
        m.stopped_because = "pruned"
    return m.stopped_because is not None


def _leave(pack: PackedMLP, active: list[Member], leaving: list[int],
           stacked_opt: Optional[StackedOptimizer]) -> tuple[PackedMLP, list[Member]]:
    """The pack and its members without those that stopped; the others continue untouched."""
    keep = [j for j in range(len(active)) if j not in leaving]
    active = [active[j] for j in keep]
    if active:
        pack = shrink(pack, keep)
        bind(pack, active)
        if stacked_opt is not None:
            stacked_opt.keep(keep)
    return pack, active
