"""What a search is asked: its options checked, its out folder claimed, search.yaml written and read."""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ..config import Config, build_config
from ..errors import ConfigError
from ..runs import atomic_write_text, unwritable
from .spaces import Param, load_space, space_dict
from .study import PRUNERS, STRATEGIES

DEFAULT_TRIALS = 20        # random / tpe without --trials


@dataclass
class Options:
    strategy: str
    trials: int
    metric: str
    direction: str
    packed: bool
    pack_size: Optional[int]
    storage: Optional[str]
    study: str
    pruner: Optional[str]
    seed: int
    heartbeat: int


def _default_direction(metric: str) -> str:
    from ..optim import higher_is_better
    return "maximize" if higher_is_better(metric) else "minimize"


def check_metric(metric: str) -> tuple[str, str]:
    split, _, name = metric.partition(".")
    if split == "test":
        raise ConfigError(f"--metric {metric}: the test split is never used to choose. Pick on validation "
                          "(e.g. val.accuracy or val.loss); the best trial is then evaluated once on test.")
    if split not in ("train", "val") or not name:
        raise ConfigError(f"--metric {metric!r} must look like val.accuracy or val.loss (split train or val).")
    return split, name


def new_options(params: dict[str, Param], *, strategy: str, trials: Optional[int], metric: str,
                direction: Optional[str], packed: bool, pack_size: Optional[int], storage: Optional[str],
                study: Optional[str], pruner: Optional[str], seed: int, heartbeat: int) -> Options:
    """A new search's options, each checked (a grid against --trials too): ConfigError before any training."""
    if strategy not in STRATEGIES:
        close = difflib.get_close_matches(str(strategy), STRATEGIES, n=1)
        raise ConfigError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}."
                          + (f" Did you mean '{close[0]}'?" if close else ""))
    if pruner not in (None, *PRUNERS):
        raise ConfigError(f"--pruner {pruner!r}: use one of {', '.join(PRUNERS)}.")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials {trials}: give at least 1.")
    if pack_size is not None and pack_size < 1:
        raise ConfigError(f"--pack-size {pack_size}: give at least 1.")
    if heartbeat < 1:
        raise ConfigError(f"heartbeat {heartbeat}: give at least 1 second.")
    if direction not in (None, "maximize", "minimize"):
        raise ConfigError(f"--direction {direction!r}: use maximize or minimize.")
    check_metric(metric)
    budget = trials
    if strategy == "grid":
        missing = [p.key for p in params.values() if p.grid_values() is None]
        if missing:
            raise ConfigError(f"--strategy grid needs finite values for every key: give "
                              f"{', '.join(missing)} a number of grid points, e.g. "
                              f"`{missing[0]}: {{...,  grid: 8}}` (or use --strategy random or tpe).")
        size = math.prod(len(p.grid_values()) for p in params.values())
        if trials is not None and size > trials:
            shape = " x ".join(str(len(p.grid_values())) for p in params.values())
            raise ConfigError(f"The grid has {size} points ({shape}) "
                              f"but --trials is {trials}. Raise --trials to {size}, use fewer grid points, "
                              "or use --strategy random or tpe to sample the space.")
        budget = size
    return Options(strategy=strategy, trials=budget or DEFAULT_TRIALS, metric=metric,
                   direction=direction or _default_direction(metric), packed=packed, pack_size=pack_size,
                   storage=storage, study=study or "search", pruner=pruner, seed=seed, heartbeat=heartbeat)


def write_request(out_dir: Path, cfg: Config, params: dict[str, Param], opts: Options) -> None:
    """search.yaml: what was asked (config, space, options), for `--resume DIR`."""
    atomic_write_text(out_dir / "search.yaml", yaml.safe_dump(
        {"config": cfg.to_dict(), "space": space_dict(params), "options": vars(opts)}, sort_keys=False))


def read_request(resume: str | Path, storage: Optional[str]) -> tuple[Path, Config, dict[str, Param], Options]:
    """The out folder, config, space and options of an earlier search (`--resume DIR`); `storage` replaces its own."""
    out_dir = Path(resume)
    saved = out_dir / "search.yaml"
    if not saved.is_file():
        raise ConfigError(f"'{resume}' is not a search directory: it has no search.yaml. Give the --out folder "
                          "of an earlier `trainlab search`.")
    state = yaml.safe_load(saved.read_text())
    cfg = build_config(state["config"])
    params = load_space(state["space"])
    opts = Options(**state["options"])
    if storage is not None:
        opts.storage = storage
    return out_dir, cfg, params, opts


def default_out(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-search-{stamp}"
    path, n = base, 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def claim_out(out_dir: Path, joining: bool) -> None:
    """A fresh folder, or (with --study) the folder of a search other workers run."""
    if out_dir.exists() and any(out_dir.iterdir()):
        ours = {"search.yaml", "journal.log", "trials", "results.csv", "best.yaml", "report.html", "search.json"}
        if joining and all(f.name in ours or f.name.startswith(("journal.log", ".")) for f in out_dir.iterdir()):
            return  # another worker's search of the same study (it may be starting this very moment)
        raise ConfigError(f"Output folder '{out_dir}' already holds files. Choose another --out, continue that "
                          f"search with `trainlab search --resume {out_dir}`, or join it as another worker with "
                          "--study NAME.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # under a file, or a folder this user cannot write: exit 2 naming it
        raise unwritable(out_dir, e) from None
