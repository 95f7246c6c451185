"""The search space: parameters read from YAML and checked, and a trial's config built from them."""

from __future__ import annotations

import difflib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from ..config import KNOWN_KEYS, Config, build_config, set_dotted
from ..errors import ConfigError

KINDS = ("choice", "uniform", "loguniform", "int")
MAX_INT_GRID = 64          # an int range without `grid: N` is enumerated up to this many values


@dataclass
class Param:
    """One searched config key: `choice` values, or a `uniform`/`loguniform`/`int` range."""

    key: str
    kind: str                       # choice | uniform | loguniform | int
    values: Optional[list] = None   # choice
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    grid: Optional[int] = None      # grid points of a range (log-spaced when log)

    def encode(self, value: Any) -> Any:
        """Optuna stores None/bool/int/float/str; lists such as model.hidden go as JSON text."""
        return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)

    def decode(self, value: Any) -> Any:
        if self.kind == "choice" and isinstance(value, str) and value not in self.values:
            return json.loads(value)
        return value

    def distribution(self):
        import optuna.distributions as d
        if self.kind == "choice":
            return d.CategoricalDistribution([self.encode(v) for v in self.values])
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log)

    def grid_values(self) -> Optional[list]:
        """The values a grid search tries; None when the range has no finite grid."""
        if self.kind == "choice":
            return list(self.values)
        if self.grid is None:
            if self.kind == "int" and self.high - self.low + 1 <= MAX_INT_GRID:
                return list(range(int(self.low), int(self.high) + 1))
            return None
        if self.grid == 1:
            points = np.array([math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2])
        else:
            points = (np.geomspace if self.log else np.linspace)(self.low, self.high, self.grid)
        points = np.clip(points, self.low, self.high)
        if self.kind == "int":
            return sorted({int(round(p)) for p in points})
        return [float(p) for p in points]

    @property
    def log_axis(self) -> bool:
        return self.log and self.kind != "choice"


def _leaf_keys() -> list[str]:
    sections = {k.rsplit(".", 1)[0] for k in KNOWN_KEYS if "." in k}
    return [k for k in KNOWN_KEYS if k not in sections]


def load_space(space: str | Path | dict) -> dict[str, Param]:
    """Read and check a SPACE (a YAML file or a dict): every key a config key, every range valid."""
    where = "the search space"
    if isinstance(space, dict):
        raw = space
    else:
        path = Path(space)
        where = f"search space '{path}'"
        if not path.is_file():
            raise ConfigError(f"Search space file '{path}' does not exist. Give a YAML file of dotted config "
                              "keys, e.g. `optim.lr: {loguniform: [1.0e-3, 1.0], grid: 8}`.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Search space file '{path}' is not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where} must map dotted config keys to ranges, e.g. "
                          "`optim.lr: {loguniform: [1.0e-3, 1.0], grid: 8}`; it is empty or not a mapping.")
    leaves = _leaf_keys()
    params = {}
    for key, spec in raw.items():
        key = str(key)
        if key not in leaves:
            close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.6)
            if key in KNOWN_KEYS:
                hint = f" '{key}' is a section; search one of its keys, e.g. " \
                       f"'{next(k for k in leaves if k.startswith(key + '.'))}'."
            else:
                hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Search space key '{key}' is not a config key.{hint} "
                              "Keys are the config's dotted keys (see the config reference in README.md).")
        params[key] = _parse_param(key, spec)
    return params


def _parse_param(key: str, spec: Any) -> Param:
    example = f"e.g. `{key}: {{uniform: [0.0, 1.0], grid: 5}}` or `{key}: {{choice: [a, b]}}`"
    if not isinstance(spec, dict):
        raise ConfigError(f"Search space '{key}': give a mapping with one of {', '.join(KINDS)}, {example}.")
    kinds = [k for k in KINDS if k in spec]
    unknown = [k for k in spec if k not in (*KINDS, "grid", "log")]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), [*KINDS, "grid", "log"], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Search space '{key}': unknown field '{unknown[0]}'.{hint} "
                          f"Allowed: {', '.join(KINDS)}, grid, log.")
    if len(kinds) != 1:
        raise ConfigError(f"Search space '{key}': give exactly one of {', '.join(KINDS)}, {example}.")
    kind = kinds[0]
    value = spec[kind]
    grid = spec.get("grid")
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise ConfigError(f"Search space '{key}': grid: {grid!r} must be a whole number of points >= 1.")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"Search space '{key}': choice must be a non-empty list of values; got {value!r}.")
        if grid is not None:
            raise ConfigError(f"Search space '{key}': grid applies to ranges; a choice is its own grid.")
        return Param(key, kind, values=value)
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"Search space '{key}': {kind} needs [low, high], two numbers; got {value!r}.")
    low, high = value
    log = kind == "loguniform" or bool(spec.get("log", False))
    if kind == "int":
        if low != int(low) or high != int(high):
            raise ConfigError(f"Search space '{key}': int needs whole-number bounds; got [{low}, {high}].")
        if low > high:
            raise ConfigError(f"Search space '{key}': the range [{low}, {high}] is empty (low > high).")
    elif not low < high:
        raise ConfigError(f"Search space '{key}': the range [{low}, {high}] is empty (low must be < high).")
    if log and low <= 0:
        raise ConfigError(f"Search space '{key}': {'loguniform' if kind == 'loguniform' else 'log: true'} needs "
                          f"bounds > 0 (a log scale has no 0 or negatives); got [{low}, {high}]. Use uniform, "
                          "or a positive lower bound such as 1.0e-6.")
    return Param(key, kind, low=low, high=high, log=log, grid=grid)


def check_space(cfg: Config, params: dict[str, Param]) -> None:
    """Every value the space can give must make a valid config: fail now, not in trial 37."""
    base = cfg.to_dict()
    for p in params.values():
        probes = p.values if p.kind == "choice" else [p.low, p.high]
        for value in probes:
            raw = json.loads(json.dumps(base))
            set_dotted(raw, p.key, int(value) if p.kind == "int" else value)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    build_config(raw)
            except ConfigError as e:
                raise ConfigError(f"Search space '{p.key}': the value {value!r} makes an invalid config:\n{e}") \
                    from None


def trial_config(cfg: Config, params: dict[str, Any], name: Optional[str] = None) -> Config:
    """The base config with a trial's parameters set (dotted keys -> values)."""
    raw = cfg.to_dict()
    for key, value in params.items():
        set_dotted(raw, key, value)
    if name is not None:
        raw["name"] = name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused-optimiser-key warnings: once for the base config is enough
        return build_config(raw)


def space_dict(params: dict[str, Param]) -> dict:
    """The space back as the mapping load_space reads (search.yaml keeps it for --resume)."""
    out = {}
    for p in params.values():
        if p.kind == "choice":
            out[p.key] = {"choice": p.values}
        else:
            spec: dict = {p.kind: [p.low, p.high]}
            if p.grid is not None:
                spec["grid"] = p.grid
            if p.kind == "int" and p.log:
                spec["log"] = True
            out[p.key] = spec
    return out


def fmt(v: Any) -> str:
    """A parameter's value as messages, figures and tables show it."""
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list) else str(v)
