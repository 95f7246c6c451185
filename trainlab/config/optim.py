"""The loss, optimiser and learning-rate schedule sections (torch.optim's names and defaults)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from .section import Section

OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "reduce_on_plateau")

# Which optional optimiser keys each optimiser reads; the others are ignored with a warning.
OPTIM_KEYS = {
    "gd": {"momentum", "nesterov", "weight_decay", "fused"},
    "sgd": {"momentum", "nesterov", "weight_decay", "fused"},
    "momentum": {"momentum", "nesterov", "weight_decay", "fused"},
    "adagrad": {"weight_decay", "eps", "fused"},
    "rmsprop": {"momentum", "weight_decay", "alpha", "eps"},
    "adam": {"weight_decay", "betas", "eps", "fused"},
    "adamw": {"weight_decay", "betas", "eps", "fused"},
}


class LossConfig(Section):
    """Regression targets are standardised with the training split's mean and std, so the loss (mse)
    is in standardised units and one learning rate suits every task; `rmse` and `mae` in the metrics
    are reported in the target's own units."""

    name: Literal["auto", "cross_entropy", "mse", "bce_with_logits"] = Field("auto", description=
        "`auto` = `cross_entropy` for classification, `mse` for regression; `cross_entropy` on logits; `mse` "
        "on a classification set compares softmax probabilities with one-hot targets (the seed's MSE); "
        "`bce_with_logits` for two classes, one output logit")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross_entropy only: label smoothing ε")


class OptimConfig(Section):
    """All optimisers are torch.optim's. Keys an optimiser does not use (`optim.momentum` for adam,
    `optim.betas` for sgd, …) are ignored with a warning, so `optim.name=adam` can override a config
    written for SGD."""

    name: Literal[OPTIMIZERS] = Field("sgd", description=
        "`gd` (full batch: one step per epoch on the whole training split, `train.batch_size` ignored), "
        "`sgd` (mini-batch), `momentum` (SGD with momentum 0.9 by default), `adagrad`, `rmsprop`, `adam`, "
        "`adamw`")
    lr: float = Field(0.01, gt=0.0, description="learning rate (the peak lr for `schedule.name=onecycle`)")
    momentum: Optional[float] = Field(None, ge=0.0, lt=1.0, description=
        "momentum for gd, sgd, momentum, rmsprop; null = 0, except 0.9 for `optim.name=momentum`")
    nesterov: bool = Field(False, description="Nesterov momentum (gd, sgd, momentum; only when momentum > 0)")
    weight_decay: Optional[float] = Field(None, ge=0.0, description=
        "weight decay inside the optimiser, on all parameters (decoupled for adamw); null = torch.optim's "
        "default: 0, or 0.01 for adamw")
    betas: tuple[float, float] = Field((0.9, 0.999), json_schema_extra={"allowed": "each in [0, 1)"},
                                       description="adam, adamw: decay rates of the first and second moment "
                                       "estimates")
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description=
        "rmsprop: smoothing constant of the squared-gradient average")
    eps: Optional[float] = Field(None, gt=0.0, description=
        "term added to the denominator (adagrad, rmsprop, adam, adamw); null = torch.optim's default for "
        "the optimiser")
    fused: bool = Field(True, description=
        "use torch.optim's fused kernel (sgd/momentum/gd, adagrad, adam, adamw; not rmsprop): one kernel "
        "updates every parameter instead of a Python loop over them. It rounds differently from the loop by "
        "about 1e-8 per step; `false` gives the loop")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v


class ScheduleConfig(Section):
    """Every schedule is stepped once per optimiser step (so warm-up can be fractional and a mid-epoch
    resume is exact); `step` and `exponential` change the lr only at epoch boundaries, so they equal
    the usual per-epoch schedules. `cosine` and `onecycle` span `train.epochs` (the cosine after the
    warm-up); an early stop ends them early. `reduce_on_plateau` alone is stepped once per epoch with
    the monitored value."""

    name: Literal[SCHEDULES] = Field("constant", description="learning-rate schedule (torch.optim.lr_scheduler)")
    warmup_epochs: float = Field(0.0, ge=0.0, description=
        "linear warm-up length, epochs (may be fractional, counted in optimiser steps); not with `onecycle` "
        "or `reduce_on_plateau`")
    warmup_steps: Optional[int] = Field(None, ge=0, description=
        "linear warm-up length in optimiser steps; replaces `schedule.warmup_epochs` when set (the usual "
        "unit with `train.steps`)")
    warmup_start: float = Field(0.1, gt=0.0, le=1.0, description=
        "warm-up starts at `warmup_start × optim.lr` and rises linearly to `optim.lr`")
    step_epochs: int = Field(10, ge=1, description="step: multiply the lr by `schedule.gamma` every this many epochs")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description=
        "factor: step (every `step_epochs`), exponential (every epoch), reduce_on_plateau (on a plateau)")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the final learning rate")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description=
        "onecycle: fraction of all steps spent raising the lr to `optim.lr`")
    patience: int = Field(2, ge=0, description=
        "reduce_on_plateau: epochs without improvement of `train.monitor` before the lr is cut")
