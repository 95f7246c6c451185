"""The optimiser step of a pack: torch.optim's update rules on stacked tensors, and stacked clipping."""

from __future__ import annotations

from typing import Sequence

import torch


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


def clip_stacked(grads: Sequence[torch.Tensor], max_norms: torch.Tensor) -> None:
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
