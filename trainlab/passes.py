"""One pass over a split's batches: running loss and accuracy sums kept on the device, and the eval-mode pass."""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import losses
from .data.loader import Batches


def summed_loss(step_losses: torch.Tensor, batch_sizes: list[int]) -> torch.Tensor:
    """Per-step batch-mean losses (..., S) times the batch sizes, summed over the steps: (...), float64."""
    sizes = torch.tensor(batch_sizes, dtype=torch.float64, device=step_losses.device)
    return (step_losses.double() * sizes).sum(-1)


class Totals:
    """Running sums of one pass, kept on the device: the host synchronises once per pass."""

    def __init__(self, device: torch.device, task: str):
        self.task = task
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.loss, self.hits, self.abs_err, self.count = z(), z(), z(), 0

    def add(self, loss: Optional[torch.Tensor], output: torch.Tensor, y: torch.Tensor, loss_name: str) -> None:
        """One batch: its mean loss (None: set later by losses_from_steps), outputs and targets.

        Counts targets: examples, or for a language model the tokens predicted (y is (B, T)).
        """
        n = y.numel()
        if loss is not None:
            self.loss += loss.double() * n
        if self.task == "self_supervised":  # pre-training: the loss alone (its output is no prediction)
            pass
        elif self.task != "regression":  # classification, or next tokens
            self.hits += (losses.predicted_labels(output, loss_name) == y).sum()
        else:
            self.abs_err += (output.squeeze(1) - y).abs().double().sum()
        self.count += n

    def losses_from_steps(self, step_losses: torch.Tensor, batch_sizes: list[int]) -> None:
        """The pass's summed loss from its per-step batch means (one reduction per epoch)."""
        self.loss = summed_loss(step_losses, batch_sizes)

    def sum_over(self, world) -> None:
        """Sum the running totals over the ranks of `world` (a distributed.World), in place."""
        if not world.distributed:
            return
        sums = torch.stack([self.loss, self.hits, self.abs_err,
                            torch.tensor(float(self.count), dtype=torch.float64, device=self.loss.device)])
        world.sum_(sums)
        self.loss, self.hits, self.abs_err, self.count = sums[0], sums[1], sums[2], int(sums[3])

    def state_over(self, world) -> dict:
        """state() summed over the ranks of `world`; this rank's running sums stay as they are."""
        if not world.distributed:
            return self.state()
        summed = Totals(self.loss.device, self.task)
        summed.restore(self.state())
        summed.sum_over(world)
        return summed.state()

    def state(self) -> dict:
        return {"loss": self.loss.cpu(), "hits": self.hits.cpu(), "abs_err": self.abs_err.cpu(), "count": self.count}

    def restore(self, state: dict) -> None:
        self.loss.copy_(state["loss"]); self.hits.copy_(state["hits"]); self.abs_err.copy_(state["abs_err"])
        self.count = state["count"]

    def result(self, y_std: float = 1.0) -> dict:
        """loss; accuracy (of next tokens too), or rmse and mae in the target's units (loss is on
        standardised targets)."""
        n = max(self.count, 1)
        loss = float(self.loss) / n
        if self.task == "self_supervised":
            return {"loss": loss}
        if self.task != "regression":  # classification, or next tokens
            return {"loss": loss, "accuracy": float(self.hits) / n}
        return {"loss": loss, "rmse": math.sqrt(loss) * y_std if loss >= 0 else float("nan"),
                "mae": float(self.abs_err) / n * y_std}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, batches: Batches, loss_fn: losses.LossFn, task: str,
                   loss_name: str, y_std: float = 1.0, world=None) -> dict:
    """Mean loss and accuracy (or rmse, mae) of `model` over a split, in eval mode.

    `world` (a distributed.World of several processes): each rank scores its slice of every batch
    and the sums are added over the ranks, so every rank returns the whole split's metrics.
    """
    was_training = model.training
    model.eval()
    totals = Totals(batches.device, task)
    for x, y in batches.epoch():
        if world is not None and world.distributed:
            x, y = world.local(x), world.local(y)
        output = model(x)  # also on an empty slice: a sharded model's forward is a collective
        if y.numel():
            totals.add(loss_fn(output, y), output, y, loss_name)
    model.train(was_training)
    if world is not None:
        totals.sum_over(world)
    return totals.result(y_std)
