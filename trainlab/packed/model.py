"""The stacked model of a pack (PackedMLP) and its members, whose parameters alias their slices of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ..config import Config
from ..models import ACTIVATION_LAYERS
from ..runs import RunDir


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
class Member:
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


def alias(stacked: torch.Tensor, k: int) -> torch.nn.Parameter:
    """A leaf Parameter sharing storage with stacked[k]: torch.optim updates the pack in place."""
    return torch.nn.Parameter(stacked.detach()[k])


def bind(pack: PackedMLP, members: list[Member]) -> None:
    """Point every member's parameters (and its optimiser's state) at its slice of the pack."""
    for k, m in enumerate(members):
        new = [alias(t, k) for t in pack.parameters()]
        if m.optimizer is not None:  # same tensors in a new place: move the optimiser's state along
            fresh = {id(old): p for old, p in zip(m.params, new)}
            for group in m.optimizer.param_groups:
                group["params"] = [fresh.get(id(p), p) for p in group["params"]]
            for old, p in zip(m.params, new):
                if old in m.optimizer.state:
                    m.optimizer.state[p] = m.optimizer.state.pop(old)
        m.params = new


def shrink(pack: PackedMLP, keep: list[int]) -> PackedMLP:
    """The pack without the members that left: stacked tensors re-gathered, aliases re-bound."""
    index = torch.tensor(keep, dtype=torch.long, device=pack.weights[0].device)
    pack.weights = [w.detach().index_select(0, index).requires_grad_() for w in pack.weights]
    pack.biases = [b.detach().index_select(0, index).requires_grad_() for b in pack.biases]
    pack.dropout = [pack.dropout[i] for i in keep]
    pack.generators = [pack.generators[i] for i in keep]
    return pack
