"""One pass of a pack over a split: its batches, each member's losses, running totals, evaluation."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .. import losses
from ..data import Splits
from ..data.loader import Batches, epoch_seed
from ..errors import ConfigError
from ..train import summed_loss
from .model import Member, PackedMLP


@dataclass
class Shared:
    """What every member of a pack shares: the data and its batches, device, dtype, precision and loss."""

    splits: Splits
    device: torch.device
    dtype: torch.dtype
    autocast: object                 # autocast_for(the first config, device): a reusable context manager
    loss_name: str
    loss_fns: list                   # each member's loss function, by Member.index
    fast_ce: Optional[float]         # every member plain cross entropy with this label smoothing, else None
    y_std: float                     # regression targets' scale: rmse and mae in the data's units
    train_batches: Batches
    val_batches: Optional[Batches]
    quiet: bool                      # train.progress=none: no progress lines

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


class PackTotals:
    """Running sums of one pass for K members, on the device: (K,) loss, hits, abs_err."""

    def __init__(self, k: int, device: torch.device, task: str):
        self.task = task
        self.loss = torch.zeros(k, dtype=torch.float64, device=device)
        self.hits = torch.zeros(k, dtype=torch.float64, device=device)
        self.abs_err = torch.zeros(k, dtype=torch.float64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor, output: torch.Tensor, y: torch.Tensor, loss_name: str) -> None:
        # loss (K,) batch means; output (K, B, C); y (K, B)
        k, n = output.shape[0], output.shape[1]
        self.loss += loss.detach().double() * n
        if self.task == "classification":
            labels = losses.predicted_labels(output.reshape(k * n, -1), loss_name).view(k, n)
            self.hits += (labels == y).sum(1)
        else:
            self.abs_err += (output.squeeze(-1) - y).abs().double().sum(1)
        self.count += n

    @classmethod
    def from_steps(cls, losses_: torch.Tensor, scores: torch.Tensor, sizes: list[int], task: str) -> "PackTotals":
        """An epoch's totals from per-step batch means (K, S) and per-step hits or |errors| (K, S)."""
        totals = cls(losses_.shape[0], losses_.device, task)
        totals.loss = summed_loss(losses_, sizes)
        if task == "classification":
            totals.hits = scores.sum(1)
        else:
            totals.abs_err = scores.sum(1)
        totals.count = int(sum(sizes))
        return totals

    def result(self, k: int, y_std: float = 1.0) -> dict:
        n = max(self.count, 1)
        loss = float(self.loss[k]) / n
        if self.task == "classification":
            return {"loss": loss, "accuracy": float(self.hits[k]) / n}
        return {"loss": loss, "rmse": math.sqrt(loss) * y_std if loss >= 0 else float("nan"),
                "mae": float(self.abs_err[k]) / n * y_std}


def batch_scores(output: torch.Tensor, y: torch.Tensor, task: str, loss_name: str) -> torch.Tensor:
    """(K,) correct predictions (classification) or summed |error| (regression) of one batch."""
    k, n = output.shape[0], output.shape[1]
    if output.dtype == torch.bfloat16:
        output = output.float()
    if task == "classification":
        return (losses.predicted_labels(output.reshape(k * n, -1), loss_name).view(k, n) == y).sum(1)
    return (output.squeeze(-1) - y).abs().double().sum(1)


def member_losses(output: torch.Tensor, y: torch.Tensor, loss_fns: list, fast_ce: Optional[float]
                   ) -> torch.Tensor:
    """(K,) mean loss of each member's batch; output (K, B, C), y (K, B)."""
    k, n = output.shape[0], output.shape[1]
    if fast_ce is not None:  # every member: cross entropy with the same label smoothing
        per_example = F.cross_entropy(output.reshape(k * n, -1), y.reshape(-1), reduction="none",
                                      label_smoothing=fast_ce)
        return per_example.view(k, n).mean(1)
    return torch.stack([fn(output[i], y[i]) for i, fn in enumerate(loss_fns)])


# ---------------------------------------------------------------- batches of a pack


def pack_batches(batches: Batches, seeds: list[int], epoch: int):
    """This epoch's training batches for the pack: (x, y, shared).

    One seed: the split's own iterator, x (B, *shape) and y (B,) shared by every member (the
    order a separate run with that seed draws). Several seeds: each seed's order and augmentation
    stream, gathered per member: x (K, B, *shape), y (K, B).
    """
    distinct = sorted(set(seeds))
    if len(distinct) == 1:
        for x, y in batches.epoch(distinct[0], epoch):
            yield x, y, True
        return
    if batches.stream:
        raise ConfigError("Packed members with different train.seed need the training split on the device "
                          "(data.loader=device), or pack only members with one seed.")
    orders = {s: batches.order(s, epoch).to(batches.device) for s in distinct}
    gens = {s: torch.Generator(device=batches.device).manual_seed(epoch_seed(s, epoch, 1)) for s in distinct}
    where = torch.tensor([distinct.index(s) for s in seeds], device=batches.device)
    own_gen = batches.gen
    try:
        for i in range(len(batches)):
            xs, ys = [], []
            for s in distinct:
                index = orders[s][i * batches.batch_size:(i + 1) * batches.batch_size]
                batches.gen = gens[s]  # the seed's own augmentation stream
                x, y = batches.rows(index)
                xs.append(batches.prepare(x))
                ys.append(y)
            yield torch.stack(xs).index_select(0, where), torch.stack(ys).index_select(0, where), False
    finally:
        batches.gen = own_gen


@torch.no_grad()
def evaluate_pack(pack: PackedMLP, batches: Batches, members: Sequence[Member], shared: Shared) -> PackTotals:
    """Every member's mean loss and accuracy (or rmse, mae) over one split, no dropout."""
    loss_fns = [shared.loss_fns[m.index] for m in members]
    totals = PackTotals(pack.k, batches.device, shared.splits.task)
    with shared.autocast:
        for x, y in batches.epoch():
            output = pack.forward(x, True, training=False)
            if output.dtype == torch.bfloat16:
                output = output.float()
            y = y.expand(pack.k, -1)
            totals.add(member_losses(output, y, loss_fns, shared.fast_ce), output, y, shared.loss_name)
    return totals
