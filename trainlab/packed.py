"""K configurations of one shape trained as one computation (packed training).

    results = train_packed([cfg_a, cfg_b, cfg_c], outs=["runs/a", "runs/b", "runs/c"])

Small models leave the hardware idle: a 784-128-10 MLP on a batch of 64 is a few hundred
microseconds of arithmetic and as much again of Python and kernel launches. Trials that share the
data, the MLP's shape and the batch size are trained together here: each Linear layer's
parameters are stacked on a leading K axis (`W: (K, out, in)`, `b: (K, out)`), the first layer is
one matrix product over all K members (`x (B, F) @ W (F, K*out)`: the shared batch is read once)
and the later ones batched matrix products (`torch.baddbmm`, `(K, B, in) @ (K, in, out)`).

Each member keeps what makes it its own trial:
- its optimiser: trainlab.optim.build_optimizer builds each member's torch.optim optimiser exactly
  as train() does (defaults resolve the same way; its schedule steps it). The update is then
  torch.optim's: with fused SGD (the default optim.fused=true) torch.optim's fused kernel called on
  the member's slices with the member's own scalars; otherwise StackedOptimizer, torch.optim's
  update rule on all members at once with (K, 1, ...) hyperparameter tensors (tested against
  torch.optim for every optimiser); `exact_step=True`, or members with different optimisers, step
  each member's own optimiser over parameters aliasing its slices (their `.grad` aliasing the
  slice of the stacked gradient). lr, momentum, weight decay, betas, alpha, eps and nesterov may
  all differ, even the optimiser;
- its schedule (trainlab.optim.build_scheduler on its own optimiser, stepped like train());
- its seed: its initial weights are build_model's after torch.manual_seed(seed), as in train();
  its dropout masks come from its own generator, a copy of the global one at that point (on the
  CPU the masks equal a separate run's); members with different seeds get their own example
  order (their batches are then gathered per member, `x: (K, B, F)`);
- its dropout rate, L1/L2 strengths, clip_grad_norm, epochs, early stopping, monitor and
  train.final.

A member that stops (its epochs done, early stopping, pruning through `on_epoch_end`, or a
NaN/inf loss) leaves the pack at the end of that epoch: the pack is rebuilt without it, the others
continue untouched. Every member gets the run directory train() would write (config.yaml,
metrics.jsonl, checkpoints/best.pt, summary.json) and the same `Result`. Differences from train():
no resumable last.pt (a search redoes an unfinished trial instead), a diverged member is returned
with summary["stopped_because"] == "diverged" instead of raising, and metrics rows carry
`pack_size` (members trained together in that epoch; `seconds` is the pack's wall time).

What packs: model.name=mlp without batch_norm, train.compile off, and on the CPU float32/float64
(bf16 autocast on CUDA packs too). `pack_key(cfg)` says which configs can share a pack.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import checkpoint, data, losses
from .config import Config, save_config
from .data.loader import Batches, epoch_seed, make_batches
from .errors import ConfigError
from .models import ACTIVATION_LAYERS, build_model
from .optim import build_optimizer, build_scheduler, is_better
from .runs import RunDir, atomic_write_json, code_version
from .train import Result, autocast_for, format_row, prepare_config, resolve_device, summed_loss

# Config keys each member of a pack may set to its own value. Every other key must be equal
# across a pack (pack_key); the search uses this list to decide what can be packed.
PER_MEMBER_KEYS = (
    "name", "optim", "schedule", "regularize.l1", "regularize.l2", "model.dropout", "train.seed",
    "train.epochs", "train.monitor", "train.final", "train.early_stopping", "train.clip_grad_norm",
    "train.checkpoint_every", "train.progress", "train.logger", "train.threads", "loss.label_smoothing",
)


def packable(cfg: Config) -> bool:
    """Whether `cfg` can be trained in a pack: a plain MLP (no batch norm), not compiled."""
    return cfg.model.name == "mlp" and not cfg.model.batch_norm and not cfg.train.compile


def pack_key(cfg: Config) -> Optional[str]:
    """Configs with equal keys can train in one pack; None when `cfg` cannot be packed at all.

    The key is everything a pack shares: the data, the MLP's shape and activation, the loss, the
    (effective) batch size, device, dtype and precision, evaluation and augmentation.
    """
    if not packable(cfg):
        return None
    shared = cfg.to_dict()
    for dotted in PER_MEMBER_KEYS:
        *parents, last = dotted.split(".")
        node = shared
        for p in parents:
            node = node[p]
        node.pop(last, None)
    shared["batch"] = "full" if cfg.optim.name == "gd" else cfg.train.batch_size
    shared["train"].pop("batch_size", None)
    return json.dumps(shared, sort_keys=True)


# ---------------------------------------------------------------- the stacked model


class PackedMLP:
    """K MLPs of one shape as stacked tensors: layer i holds W (K, out, in) and b (K, out).

    Built from K modules trainlab.models.build_model made (Flatten, Linear, activation, Dropout,
    ..., Linear); `forward` maps x (B, *shape) shared, or (K, B, *shape) per member, to (K, B, C).
    """

    def __init__(self, modules: Sequence[torch.nn.Module], activation: str, dropout: Sequence[float],
                 generators: Sequence[Optional[torch.Generator]]):
        linears = [[m for m in module if isinstance(m, torch.nn.Linear)] for module in modules]
        # W: (K, out, in) and b: (K, out), leaves of the autograd graph; members are slices.
        self.weights = [torch.stack([ls[i].weight.detach() for ls in linears]).requires_grad_()
                        for i in range(len(linears[0]))]
        self.biases = [torch.stack([ls[i].bias.detach() for ls in linears]).requires_grad_()
                       for i in range(len(linears[0]))]
        self.activation = ACTIVATION_LAYERS[activation]()
        self.dropout = list(dropout)
        self.generators = list(generators)

    @property
    def k(self) -> int:
        return self.weights[0].shape[0]

    def parameters(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def forward(self, x: torch.Tensor, shared: bool, training: bool) -> torch.Tensor:
        k = self.k
        w, b = self.weights[0], self.biases[0]
        out_features, hidden = w.shape[1], len(self.weights) > 1
        if shared:  # one product for all members: (B, F) @ (F, K*out) -> (B, K*out)
            x = x.reshape(x.shape[0], -1)
            h = torch.addmm(b.reshape(1, -1), x, w.reshape(k * out_features, -1).t())
            if hidden:
                h = self.activation(h)  # elementwise, on the contiguous (B, K*out) buffer
            h = h.view(x.shape[0], k, out_features).transpose(0, 1)  # (K, B, out)
        else:       # each member its own batch: (K, B, F) @ (K, F, out)
            h = torch.baddbmm(b.unsqueeze(1), x.reshape(k, x.shape[1], -1), w.transpose(1, 2))
            if hidden:
                h = self.activation(h)
        for i in range(1, len(self.weights)):
            if training and any(self.dropout):
                h = h * self._dropout_scale(h)
            h = torch.baddbmm(self.biases[i].unsqueeze(1), h, self.weights[i].transpose(1, 2))  # (K, B, out)
            if i < len(self.weights) - 1:
                h = self.activation(h)
        return h

    def _dropout_scale(self, h: torch.Tensor) -> torch.Tensor:
        """(K, B, width) keep-masks divided by 1 - p, each member's from its own generator.

        Draws exactly what torch's CPU dropout draws for a (B, width) tensor: empty, bernoulli_(1-p),
        div_(1-p); members without dropout get ones (and draw nothing, like a model without it).
        """
        shape = h.shape[1:]
        scales = []
        for p, gen in zip(self.dropout, self.generators):
            if p > 0:
                noise = torch.empty(shape, dtype=h.dtype, device=h.device).bernoulli_(1 - p, generator=gen)
                scales.append(noise.div_(1 - p))
            else:
                scales.append(torch.ones(shape, dtype=h.dtype, device=h.device))
        return torch.stack(scales)

    def penalty(self, l1: Optional[torch.Tensor], l2: Optional[torch.Tensor]) -> torch.Tensor:
        """Sum over members of l1_k * sum|W_k| + l2_k / 2 * sum W_k^2 (weight matrices only).

        l1, l2: (K,) strengths or None; a member's gradient is its own penalty's (a zero adds 0).
        """
        total = 0.0
        for w in self.weights:
            if l1 is not None:
                total = total + (l1.view(-1, 1, 1) * w.abs()).sum()
            if l2 is not None:
                total = total + ((l2 / 2).view(-1, 1, 1) * w.pow(2)).sum()
        return total


# ---------------------------------------------------------------- one member's state


@dataclass
class _Member:
    """One trial of the pack: its config, run directory, module, optimiser and progress."""

    index: int                        # position in the caller's list
    cfg: Config
    run: RunDir
    module: torch.nn.Module           # build_model's module: names and shapes of the state dict
    generator: Optional[torch.Generator]
    names: list[str] = field(default_factory=list)   # state-dict names of W0, b0, W1, b1, ...
    params: list[torch.nn.Parameter] = field(default_factory=list)  # aliases of the pack's slices
    optimizer: Optional[torch.optim.Optimizer] = None
    scheduler: object = None
    plateau: bool = False
    history: list[dict] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_epochs: int = 0
    stopped_because: Optional[str] = None
    best_state: Optional[dict] = None
    global_step: int = 0
    seconds: float = 0.0
    diverged_at: Optional[tuple[int, int, float]] = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in zip(self.names, self.params)}


def _alias(stacked: torch.Tensor, k: int) -> torch.nn.Parameter:
    """A leaf Parameter sharing storage with stacked[k]: torch.optim updates the pack in place."""
    return torch.nn.Parameter(stacked.detach()[k])


def _bind(pack: PackedMLP, members: list[_Member]) -> None:
    """Point every member's parameters (and its optimiser's state) at its slice of the pack."""
    for k, m in enumerate(members):
        new = [_alias(t, k) for t in pack.parameters()]
        if m.optimizer is not None:  # same tensors in a new place: move the optimiser's state along
            fresh = {id(old): p for old, p in zip(m.params, new)}
            for group in m.optimizer.param_groups:
                group["params"] = [fresh.get(id(p), p) for p in group["params"]]
            for old, p in zip(m.params, new):
                if old in m.optimizer.state:
                    m.optimizer.state[p] = m.optimizer.state.pop(old)
        m.params = new


def _shrink(pack: PackedMLP, keep: list[int]) -> PackedMLP:
    """The pack without the members that left: stacked tensors re-gathered, aliases re-bound."""
    index = torch.tensor(keep, dtype=torch.long, device=pack.weights[0].device)
    pack.weights = [w.detach().index_select(0, index).requires_grad_() for w in pack.weights]
    pack.biases = [b.detach().index_select(0, index).requires_grad_() for b in pack.biases]
    pack.dropout = [pack.dropout[i] for i in keep]
    pack.generators = [pack.generators[i] for i in keep]
    return pack


# ---------------------------------------------------------------- the optimiser step of a pack


class StackedOptimizer:
    """torch.optim's update rule for K members at once, on the stacked tensors.

    Each member's hyperparameters are read from its own torch.optim optimiser (built by
    trainlab.optim.build_optimizer, exactly as train() builds it, and stepped by its schedule), so
    defaults resolve the same way; the update follows torch.optim's single-tensor code line by
    line, with every scalar replaced by a (K, 1, ...) tensor of the members' values. Only the
    rounding can differ (by an ulp, from a fused multiply-add): tests/test_packed.py checks every
    optimiser against torch.optim. Members must share the optimiser class; options torch.optim
    has that trainlab never sets (amsgrad, centered, maximize, lr_decay, ...) fall back to the
    per-member torch.optim step (`supports`).
    """

    KINDS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw",
             torch.optim.Adagrad: "adagrad", torch.optim.RMSprop: "rmsprop"}

    @classmethod
    def supports(cls, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        kinds = {type(o) for o in optimizers}
        if len(kinds) != 1 or next(iter(kinds)) not in cls.KINDS:
            return False
        for o in optimizers:
            g = o.param_groups[0]
            if len(o.param_groups) != 1 or g.get("maximize") or g.get("amsgrad") or g.get("centered") \
                    or g.get("dampening", 0) or g.get("lr_decay", 0) or g.get("initial_accumulator_value", 0) \
                    or g.get("differentiable") or g.get("capturable"):
                return False
        return True

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], params: Sequence[torch.Tensor]):
        self.optimizers = list(optimizers)
        self.kind = self.KINDS[type(self.optimizers[0])]
        self.steps = 0
        self.state: dict[str, list[torch.Tensor]] = {}
        like = params[0]
        self._consts = {}
        for key in ("momentum", "weight_decay", "eps", "alpha"):
            values = [o.param_groups[0].get(key) for o in self.optimizers]
            if values[0] is not None:
                self._consts[key] = values
        if self.kind == "sgd":
            self._consts["nesterov"] = [bool(o.param_groups[0]["nesterov"]) for o in self.optimizers]
        if self.kind in ("adam", "adamw"):
            self._consts["beta1"] = [o.param_groups[0]["betas"][0] for o in self.optimizers]
            self._consts["beta2"] = [o.param_groups[0]["betas"][1] for o in self.optimizers]
        self.dtype, self.device = like.dtype, like.device
        # torch.optim's fused SGD kernel, called per member on its slices with its own scalars:
        # one pass over memory and the very kernel a separate fused run uses.
        self._views = None
        self.fused = (self.kind == "sgd" and hasattr(torch, "_fused_sgd_")
                      and all(o.param_groups[0].get("fused") for o in self.optimizers))

    def _fused_sgd(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lrs: list[float]) -> None:
        c = self._consts
        first = "momentum_buffer" not in self.state
        if first:
            self.state["momentum_buffer"] = [torch.empty_like(p) for p in params]
        bufs = self.state["momentum_buffer"]
        # Per-member slices (unbind: all K views of a stacked tensor in one call); the parameters'
        # and buffers' views are kept until the pack changes, the gradients are new every step.
        key = tuple(id(t) for t in (*params, *bufs))
        if self._views is None or self._views[0] != key:
            self._views = (key, list(zip(*(p.unbind(0) for p in params))), list(zip(*(b.unbind(0) for b in bufs))))
        _, member_params, member_bufs = self._views
        member_grads = list(zip(*(g.unbind(0) for g in grads)))
        for j, lr in enumerate(lrs):
            momentum = c["momentum"][j]
            torch._fused_sgd_(list(member_params[j]), list(member_grads[j]),
                              list(member_bufs[j]) if momentum != 0 else [],
                              weight_decay=c["weight_decay"][j], momentum=momentum, lr=lr, dampening=0.0,
                              nesterov=c["nesterov"][j], maximize=False, is_first_step=first)

    def _column(self, values: list, ndim: int) -> torch.Tensor:
        """(K,) python values -> a (K, 1, ..., 1) tensor that broadcasts against a stacked tensor."""
        return torch.tensor(values, dtype=self.dtype, device=self.device).view(-1, *([1] * (ndim - 1)))

    def keep(self, index: list[int]) -> None:
        """Members `index` stay (in that order); their state rows are gathered."""
        self.optimizers = [self.optimizers[i] for i in index]
        self._consts = {k: [v[i] for i in index] for k, v in self._consts.items()}
        ix = torch.tensor(index, dtype=torch.long, device=self.device)
        self.state = {k: [t.index_select(0, ix) for t in ts] for k, ts in self.state.items()}

    @torch.no_grad()
    def step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
        """One update of every stacked parameter (K, ...) from its gradient (K, ...)."""
        self.steps += 1
        c = self._consts
        lrs = [o.param_groups[0]["lr"] for o in self.optimizers]
        if self.kind == "sgd" and self.fused:
            self._fused_sgd(params, grads, lrs)
            return
        for i, (p, g) in enumerate(zip(params, grads)):
            col = lambda values: self._column(values, p.ndim)  # noqa: E731
            lr = col(lrs)
            wd = c.get("weight_decay")
            decay = wd is not None and any(wd)
            if self.kind == "sgd" and self.fused:
                continue  # all parameters at once below
            if self.kind == "sgd":
                if decay:
                    g = g.addcmul(p, col(wd))                               # grad + wd * param
                if any(c["momentum"]):
                    bufs = self.state.setdefault("momentum_buffer", [None] * len(params))
                    if bufs[i] is None:
                        bufs[i] = g.clone()                                  # first step: buf = grad
                    else:
                        torch.addcmul(g, bufs[i], col(c["momentum"]), out=bufs[i])  # buf = m * buf + grad
                    if any(c["nesterov"]):
                        g = torch.where(col(c["nesterov"]).bool(), g.addcmul(bufs[i], col(c["momentum"])), bufs[i])
                    else:
                        g = bufs[i]
                p.addcmul_(g, -lr)                                           # param - lr * grad
            elif self.kind in ("adam", "adamw"):
                exp_avg, exp_avg_sq = self._moments(i, p, len(params))
                if decay and self.kind == "adamw":
                    p.mul_(1 - lr * col(wd))                                 # decoupled decay
                elif decay:
                    g = g.addcmul(p, col(wd))
                beta1, beta2 = c["beta1"], c["beta2"]
                exp_avg.lerp_(g, col([1 - b for b in beta1]))
                exp_avg_sq.mul_(col(beta2)).addcmul_(g, g * col([1 - b for b in beta2]))
                step_size = col([lr_ / (1 - b ** self.steps) for lr_, b in zip(lrs, beta1)])
                correction2 = col([(1 - b ** self.steps) ** 0.5 for b in beta2])
                denom = (exp_avg_sq.sqrt() / correction2).add_(col(c["eps"]))
                p.sub_(step_size * (exp_avg / denom))                        # param - step * m / denom
            elif self.kind == "adagrad":
                if decay:
                    g = g.addcmul(p, col(wd))
                sums = self.state.setdefault("sum", [None] * len(params))
                if sums[i] is None:
                    sums[i] = torch.zeros_like(p)
                sums[i].addcmul_(g, g)
                std = sums[i].sqrt().add_(col(c["eps"]))
                p.sub_(lr * (g / std))
            else:  # rmsprop
                if decay:
                    g = g.addcmul(p, col(wd))
                squares = self.state.setdefault("square_avg", [None] * len(params))
                if squares[i] is None:
                    squares[i] = torch.zeros_like(p)
                alpha = c["alpha"]
                squares[i].mul_(col(alpha)).addcmul_(g, g * col([1 - a for a in alpha]))
                avg = squares[i].sqrt().add_(col(c["eps"]))
                if any(c["momentum"]):
                    bufs = self.state.setdefault("momentum_buffer", [None] * len(params))
                    if bufs[i] is None:
                        bufs[i] = torch.zeros_like(p)
                    bufs[i].mul_(col(c["momentum"])).addcdiv_(g, avg)       # momentum 0: buf = g / avg
                    p.addcmul_(bufs[i], -lr)
                else:
                    p.sub_(lr * (g / avg))

    def _moments(self, i: int, p: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        avgs = self.state.setdefault("exp_avg", [None] * n)
        sqs = self.state.setdefault("exp_avg_sq", [None] * n)
        if avgs[i] is None:
            avgs[i], sqs[i] = torch.zeros_like(p), torch.zeros_like(p)
        return avgs[i], sqs[i]


def _clip_stacked(grads: Sequence[torch.Tensor], max_norms: torch.Tensor) -> None:
    """torch.nn.utils.clip_grad_norm_ per member on stacked gradients; max_norms (K,), inf = no clip.

    As torch: the total norm is the norm of the per-parameter norms; the gradients are multiplied
    by min(1, max_norm / (total + 1e-6)).
    """
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads], dim=1)  # (K, P)
    total = torch.linalg.vector_norm(norms, dim=1)                                                  # (K,)
    coef = torch.where(torch.isfinite(max_norms), torch.clamp(max_norms / (total + 1e-6), max=1.0), 1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.ndim - 1))).to(g.dtype))


# ---------------------------------------------------------------- metrics of a pass


class _PackTotals:
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
    def from_steps(cls, losses_: torch.Tensor, scores: torch.Tensor, sizes: list[int], task: str) -> "_PackTotals":
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


def _scores(output: torch.Tensor, y: torch.Tensor, task: str, loss_name: str) -> torch.Tensor:
    """(K,) correct predictions (classification) or summed |error| (regression) of one batch."""
    k, n = output.shape[0], output.shape[1]
    if output.dtype == torch.bfloat16:
        output = output.float()
    if task == "classification":
        return (losses.predicted_labels(output.reshape(k * n, -1), loss_name).view(k, n) == y).sum(1)
    return (output.squeeze(-1) - y).abs().double().sum(1)


def _member_losses(output: torch.Tensor, y: torch.Tensor, loss_fns: list, fast_ce: Optional[float]
                   ) -> torch.Tensor:
    """(K,) mean loss of each member's batch; output (K, B, C), y (K, B)."""
    k, n = output.shape[0], output.shape[1]
    if fast_ce is not None:  # every member: cross entropy with the same label smoothing
        per_example = F.cross_entropy(output.reshape(k * n, -1), y.reshape(-1), reduction="none",
                                      label_smoothing=fast_ce)
        return per_example.view(k, n).mean(1)
    return torch.stack([fn(output[i], y[i]) for i, fn in enumerate(loss_fns)])


# ---------------------------------------------------------------- batches of a pack


def _pack_batches(batches: Batches, seeds: list[int], epoch: int):
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


# ---------------------------------------------------------------- the loop


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

    first = cfgs[0]
    if first.train.threads:
        torch.set_num_threads(first.train.threads)
    device = resolve_device(first.train.device)
    dtype = getattr(torch, first.train.dtype)
    splits = splits if splits is not None else data.load(first, data_dir)
    loss_name = losses.resolve_name(first, splits.task, splits.num_classes)
    n_out = losses.num_outputs(loss_name, splits.task, splits.num_classes)
    y_std = splits.extra.get("target_std", 1.0)
    autocast = autocast_for(first, device)

    runs = [RunDir.create(out, cfg.name) for out, cfg in zip(outs, cfgs)]
    for cfg, run in zip(cfgs, runs):
        save_config(cfg, run.config)

    # Each member's initial weights and dropout stream: exactly what train() would start from.
    members: list[_Member] = []
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
        module = module.to(device=device, dtype=dtype)
        names = [n for n, _ in module.named_parameters()]
        members.append(_Member(index=i, cfg=cfg, run=run, module=module, generator=generator, names=names))
    pack = PackedMLP([m.module for m in members], first.model.activation,
                     [m.cfg.model.dropout for m in members], [m.generator for m in members])
    _bind(pack, members)

    batch_size = len(splits.train) if first.optim.name == "gd" else first.train.batch_size
    train_batches = make_batches(splits, "train", batch_size, device, dtype, first, train=True)
    val_batches = make_batches(splits, "val", first.eval.batch_size, device, dtype, first)
    steps_per_epoch = len(train_batches)
    for m in members:
        m.optimizer = build_optimizer(m.cfg, m.params)
        m.scheduler = build_scheduler(m.cfg, m.optimizer, steps_per_epoch)
        m.plateau = isinstance(m.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if m.cfg.train.monitor.startswith("val.") and val_batches is None:
            raise ConfigError(f"train.monitor={m.cfg.train.monitor} needs a validation split, but "
                              "data.val_fraction=0. Set data.val_fraction > 0 or train.monitor=train.loss.")
    stacked_opt = None
    if not exact_step and StackedOptimizer.supports([m.optimizer for m in members]):
        stacked_opt = StackedOptimizer([m.optimizer for m in members], pack.parameters())
    loss_fns = [losses.build_loss(m.cfg, splits.task, splits.num_classes) for m in members]
    smoothing = {m.cfg.loss.label_smoothing for m in members}
    fast_ce = smoothing.pop() if loss_name == "cross_entropy" and len(smoothing) == 1 else None
    quiet = first.train.progress == "none"

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    say(f"pack of {len(members)}: {len(splits.train)} training examples, {steps_per_epoch} steps per epoch, "
        f"device {device.type}")
    active = list(members)
    epoch = 1
    start = time.perf_counter()
    while active:
        k = len(active)
        seeds = [m.cfg.train.seed for m in active]
        l1s, l2s = [m.cfg.regularize.l1 for m in active], [m.cfg.regularize.l2 for m in active]
        l1 = torch.tensor(l1s, dtype=dtype, device=device) if any(l1s) else None
        l2 = torch.tensor(l2s, dtype=dtype, device=device) if any(l2s) else None
        any_penalty = l1 is not None or l2 is not None
        fns = [loss_fns[m.index] for m in active]
        clips = [m.cfg.train.clip_grad_norm for m in active]
        clip = None if all(c is None for c in clips) else torch.tensor(
            [c if c is not None else math.inf for c in clips], dtype=torch.float64, device=device)
        stepped = [m for m in active if m.scheduler is not None and not m.plateau]
        # Per-step results stay on the device, (K, steps): one host synchronisation per epoch.
        step_losses = torch.zeros(k, steps_per_epoch, device=device, dtype=torch.float64)
        step_scores = torch.zeros(k, steps_per_epoch, device=device, dtype=torch.float64)  # hits or |error|
        stacked = pack.parameters()
        t0 = time.perf_counter()
        for step, (x, y, shared) in enumerate(_pack_batches(train_batches, seeds, epoch)):
            y = y.expand(k, -1) if shared else y                      # (K, B)
            with autocast:
                output = pack.forward(x, shared, training=True)      # (K, B, C)
                loss = _member_losses(output, y, fns, fast_ce)       # (K,)
            objective = loss.sum() + pack.penalty(l1, l2) if any_penalty else loss.sum()
            objective.backward()
            grads = [t.grad for t in stacked]
            if stacked_opt is not None:   # every member's torch.optim rule in one pass
                if clip is not None:
                    _clip_stacked(grads, clip)
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
            for m in stepped:
                m.scheduler.step()
            step_losses[:, step] = loss.detach()
            step_scores[:, step] = _scores(output.detach(), y, splits.task, loss_name)
        totals = _PackTotals.from_steps(step_losses, step_scores, train_batches.batch_sizes(), splits.task)
        bad = ~torch.isfinite(step_losses)
        diverged = bad.any(1).tolist()   # the one host synchronisation of the epoch
        seconds = time.perf_counter() - t0

        val = None
        if val_batches is not None:
            with autocast:
                val = _evaluate_pack(pack, val_batches, fns, fast_ce, splits.task, loss_name)
        leaving = []
        for j, m in enumerate(active):
            m.global_step += steps_per_epoch
            m.seconds += seconds
            if diverged[j]:
                first_bad = int(bad[j].nonzero()[0, 0])
                m.diverged_at = (epoch, first_bad + 1, float(step_losses[j, first_bad]))
                m.stopped_because = "diverged"
                leaving.append(j)
                continue
            row = {"epoch": epoch, "step": m.global_step, "lr": m.optimizer.param_groups[0]["lr"],
                   "seconds": seconds, "pack_size": k}
            row.update({f"train_{key}": v for key, v in totals.result(j, y_std).items()})
            if val is not None:
                row.update({f"val_{key}": v for key, v in val.result(j, y_std).items()})
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
            if m.stopped_because is not None:
                leaving.append(j)
        say(f"pack of {k}: " + format_row({"epoch": epoch, "seconds": seconds}, max(m.cfg.train.epochs for m in active))
            + (f"  {len(leaving)} leave" if leaving else ""))
        if leaving:
            keep = [j for j in range(k) if j not in leaving]
            active = [active[j] for j in keep]
            if active:
                pack = _shrink(pack, keep)
                _bind(pack, active)
                if stacked_opt is not None:
                    stacked_opt.keep(keep)
        epoch += 1

    return _finish(members, splits, train_batches, device, dtype, loss_fns, fast_ce, loss_name, y_std, autocast,
                   time.perf_counter() - start)


@torch.no_grad()
def _evaluate_pack(pack: PackedMLP, batches: Batches, loss_fns: list, fast_ce: Optional[float], task: str,
                   loss_name: str) -> _PackTotals:
    """Every member's mean loss and accuracy (or rmse, mae) over one split, no dropout."""
    totals = _PackTotals(pack.k, batches.device, task)
    for x, y in batches.epoch():
        output = pack.forward(x, True, training=False)
        if output.dtype == torch.bfloat16:
            output = output.float()
        y = y.expand(pack.k, -1)
        totals.add(_member_losses(output, y, loss_fns, fast_ce), output, y, loss_name)
    return totals


def _finish(members: list[_Member], splits: data.Splits, train_batches: Batches, device: torch.device,
            dtype: torch.dtype, loss_fns: list, fast_ce: Optional[float], loss_name: str, y_std: float, autocast,
            seconds: float) -> list[Result]:
    """Final weights (train.final), one packed evaluation of every split, run files, Results."""
    for m in members:
        final = m.best_state if (m.cfg.train.final == "best" and m.best_state is not None) else m.state_dict()
        m.module.load_state_dict(final)
        if m.best_state is not None:
            checkpoint.save(m.run.best, {"model": m.best_state, "epoch": m.best_epoch, "monitor": m.cfg.train.monitor,
                                         "value": m.best_value, "config": m.cfg.to_dict(),
                                         "code_version": code_version()})
        if m.best_state is None or m.cfg.train.final == "last":
            checkpoint.save(m.run.last, {"model": m.state_dict(), "epoch": len(m.history), "resumable": False,
                                         "config": m.cfg.to_dict(), "code_version": code_version()})
    healthy = [m for m in members if m.stopped_because != "diverged"]
    finals: dict[int, dict] = {m.index: {} for m in members}
    for m in healthy:  # val: the row of the epoch whose weights are final (train() would recompute it)
        epoch = m.best_epoch if (m.cfg.train.final == "best" and m.best_state is not None) else len(m.history)
        row = m.history[epoch - 1] if epoch else {}
        val = {key[4:]: v for key, v in row.items() if key.startswith("val_")}
        if val:
            finals[m.index]["val"] = val
    if healthy:
        first = healthy[0].cfg
        pack = PackedMLP([m.module for m in healthy], first.model.activation, [0.0] * len(healthy),
                         [None] * len(healthy))
        fns = [loss_fns[m.index] for m in healthy]
        for name in ("train", "val", "test"):
            if name == "val" and all("val" in finals[m.index] for m in healthy):
                continue
            if name == "train":  # the training split already on the device, read in order, unaugmented
                batches = train_batches.for_eval(first.eval.batch_size, first.eval.limit)
            else:
                batches = make_batches(splits, name, first.eval.batch_size, device, dtype, first)
            if batches is None:
                continue
            with autocast:
                totals = _evaluate_pack(pack, batches, fns, fast_ce, splits.task, loss_name)
            for j, m in enumerate(healthy):
                finals[m.index][name] = totals.result(j, y_std)
    for m in healthy:  # summary.json's order: train, val, test
        finals[m.index] = {name: finals[m.index][name] for name in ("train", "val", "test") if name in finals[m.index]}
    results = []
    for m in members:
        metrics = finals[m.index] if m.stopped_because != "diverged" else {"train": {"loss": float("nan")}}
        summary = {
            "run_dir": str(m.run.path),
            "epochs_run": len(m.history),
            "best_epoch": m.best_epoch,
            "stopped_because": m.stopped_because,
            "seconds": m.seconds,
            "final_checkpoint": m.cfg.train.final if m.best_epoch is not None else "last",
            "monitor": m.cfg.train.monitor,
            "metrics": metrics,
            "code_version": code_version(),
            "torch_threads": torch.get_num_threads(),
            "packed": {"members": len(members), "seconds": seconds},
        }
        if m.diverged_at is not None:
            epoch, step, value = m.diverged_at
            summary["diverged"] = {"epoch": epoch, "step": step, "loss": value}
        atomic_write_json(m.run.summary, summary)
        results.append(Result(run_dir=m.run.path, summary=summary, history=m.history, model=m.module))
    return results
