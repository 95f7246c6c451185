"""The study's pieces: samplers and pruners by name, a trial's values, and the bookkeeping of trials."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import ConfigError
from .spaces import Param
from .storage import import_optuna

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving", "hyperband")


def make_sampler(strategy: str, params: dict[str, Param], seed: int):
    optuna = import_optuna()
    if strategy == "grid":
        grid = {p.key: [p.encode(v) for v in p.grid_values()] for p in params.values()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(name: Optional[str], epochs: int):
    optuna = import_optuna()
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    raise ConfigError(f"--pruner {name!r}: use one of {', '.join(PRUNERS)}.")


def suggest(trial, params: dict[str, Param]) -> dict[str, Any]:
    """The trial's value of every searched key (decoded: model.hidden comes back a list)."""
    out = {}
    for p in params.values():
        if p.kind == "choice":
            value = trial.suggest_categorical(p.key, [p.encode(v) for v in p.values])
        elif p.kind == "int":
            value = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        else:
            value = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.log)
        out[p.key] = p.decode(value)
    return out


def is_retry(t) -> bool:
    return "failed_trial" in t.system_attrs


def is_surplus(t) -> bool:
    return bool(t.user_attrs.get("surplus"))


def originals(trials) -> list:
    """Trials that count towards the budget: neither a retry of a dead worker's trial nor surplus."""
    return [t for t in trials if not is_retry(t) and not is_surplus(t)]


def study_tell(study, trial, value: Optional[float] = None, state=None) -> None:
    """study.tell; GridSampler calls study.stop() when the grid is done, which only an optimize()
    loop may do: the trial is stored first (in a finally), so that RuntimeError is dropped."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise
