"""Grid, random and Bayesian (TPE) search over config keys: spaces -> Optuna, trials -> train().

    result = search("examples/seed_mlp.yaml", "examples/space_lr.yaml", strategy="grid")
    result["best"]          # {"params": {"optim.lr": 0.0316}, "value": 0.861, "trial": 5}

A SPACE is YAML over the config's dotted keys:

    optim.lr: {loguniform: [1.0e-3, 1.0], grid: 8}   # 8 log-spaced grid points
    optim.momentum: {choice: [0.0, 0.9]}
    model.hidden: {choice: [[128], [256, 128]]}
    regularize.l2: {uniform: [0.0, 1.0e-3], grid: 4}
    train.batch_size: {int: [32, 256], log: true}

Sampling, pruning and bookkeeping are Optuna's (GridSampler, RandomSampler, TPESampler;
MedianPruner, SuccessiveHalvingPruner, HyperbandPruner; JournalStorage or RDBStorage), driven
through ask/tell so that K trials are asked at once and trained as one pack (trainlab.packed)
when they share a shape; other trials run through train(), one after another. No training code
lives here. The test split is never used to choose: trials are trained and scored without it,
the best is picked on `metric` (a train or val metric), then evaluated once on the test split.

The out directory:
    search.yaml   what was asked (config, space, options): `--resume DIR` reads it
    journal.log   the study (Optuna's journal file; several local workers may share it)
    trials/NNNN/  each trial's run directory (config.yaml, metrics.jsonl, summary.json, ...)
    results.csv   one row per trial; best.yaml the best config; report.html the plots;
    search.json   the result (what --json prints) with the best trial's test metrics
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import sys
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from .config import KNOWN_KEYS, Config, build_config, load_config, set_dotted
from .errors import ConfigError, DivergedError, Interrupted, TrainlabError
from .runs import atomic_write_json, atomic_write_text, read_json

STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "halving", "hyperband")
KINDS = ("choice", "uniform", "loguniform", "int")
MAX_INT_GRID = 64          # an int range without `grid: N` is enumerated up to this many values
DEFAULT_TRIALS = 20        # random / tpe without --trials
MAX_PACK = 32              # default cap on members per pack (beyond, the matmuls stop getting cheaper)
PACK_MEMORY = 2 << 30      # default cap on a pack's activation memory, bytes
TPE_PACK = 8               # TPE learns from finished trials: smaller packs by default


# ---------------------------------------------------------------- the space


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


# ---------------------------------------------------------------- Optuna pieces


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("trainlab search needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
    return optuna


def _retry_callback():
    import optuna.storages as s
    cls = getattr(s, "RetryHeartbeatStaleTrialCallback", None) or s.RetryFailedTrialCallback
    return cls(max_retry=3)


def open_storage(storage: Optional[str], out: Path, heartbeat: int):
    """Optuna storage: a journal file in `out` by default, else the RDB URL (postgresql://, sqlite:///).

    An RDB storage records heartbeats: a trial whose worker died is failed after 2 x `heartbeat`
    seconds and retried (RetryHeartbeatStaleTrialCallback). Unreachable: ConfigError, exit 2.
    """
    optuna = _optuna()
    if storage is None or storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        path = Path(storage[len("journal:"):]) if storage else out / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {"pool_pre_ping": True}
    url = _with_driver(storage)
    if storage.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    options = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options,
                                                  heartbeat_stale_trial_callback=_retry_callback())
            except TypeError:  # Optuna < 4.9 names it failed_trial_callback
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options,
                                                  failed_trial_callback=_retry_callback())
    except ImportError as e:
        raise ConfigError(f"--storage {_redact(storage)} needs a database driver that is not installed ({e}). "
                          "For PostgreSQL: pip install 'trainlab[postgres]' (psycopg2-binary).") from None
    except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"Cannot use the search storage {_redact(storage)}: {first}. Check that the server is "
                          "running and reachable, the database exists and the URL's user and password are "
                          "right (e.g. postgresql://user:password@127.0.0.1:5432/dbname).") from None


def _with_driver(url: str) -> str:
    """postgresql:// with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg (3),
    trainlab's `postgres` extra installs psycopg2-binary."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def _sampler(strategy: str, params: dict[str, Param], seed: int):
    optuna = _optuna()
    if strategy == "grid":
        grid = {p.key: [p.encode(v) for v in p.grid_values()] for p in params.values()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(name: Optional[str], epochs: int):
    optuna = _optuna()
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    raise ConfigError(f"--pruner {name!r}: use one of {', '.join(PRUNERS)}.")


def _suggest(trial, params: dict[str, Param]) -> dict[str, Any]:
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


# ---------------------------------------------------------------- bookkeeping of a study


def _is_retry(t) -> bool:
    return "failed_trial" in t.system_attrs


def _is_surplus(t) -> bool:
    return bool(t.user_attrs.get("surplus"))


def _originals(trials) -> list:
    """Trials that count towards the budget: neither a retry of a dead worker's trial nor surplus."""
    return [t for t in trials if not _is_retry(t) and not _is_surplus(t)]


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class _Heartbeat:
    """Records heartbeats of the trials this worker runs, every `interval` seconds (RDB storage)."""

    def __init__(self, storage, interval: Optional[int]):
        from optuna.storages._heartbeat import is_heartbeat_enabled
        self.storage, self.interval = storage, interval
        self.enabled = interval is not None and is_heartbeat_enabled(storage)
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None
        if self.enabled:
            self.thread = threading.Thread(target=self._run, daemon=True, name="trainlab-heartbeat")
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = list(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a finished trial or a lost connection: the next beat retries
                    pass

    def add(self, trial_id: int) -> None:
        if self.enabled:
            self.storage.record_heartbeat(trial_id)
            with self.lock:
                self.ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


# ---------------------------------------------------------------- the search


@dataclass
class _Options:
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
    from .optim import higher_is_better
    return "maximize" if higher_is_better(metric) else "minimize"


def _check_metric(metric: str) -> tuple[str, str]:
    split, _, name = metric.partition(".")
    if split == "test":
        raise ConfigError(f"--metric {metric}: the test split is never used to choose. Pick on validation "
                          "(e.g. val.accuracy or val.loss); the best trial is then evaluated once on test.")
    if split not in ("train", "val") or not name:
        raise ConfigError(f"--metric {metric!r} must look like val.accuracy or val.loss (split train or val).")
    return split, name


def search(config: Config | dict | str | Path | None, space: str | Path | dict | None = None, *,
           strategy: str = "grid", trials: Optional[int] = None, metric: str = "val.accuracy",
           direction: Optional[str] = None, out: Optional[str | Path] = None, packed: bool = True,
           pack_size: Optional[int] = None, storage: Optional[str] = None, study: Optional[str] = None,
           resume: Optional[str | Path] = None, pruner: Optional[str] = None, seed: int = 0,
           heartbeat: int = 10, data_dir: Optional[str] = None, quiet: bool = False) -> dict:
    """Search `space` around `config`; returns {"best": {"params", "value", "trial"}, "trials", "out_dir"}.

    >>> result = search("examples/seed_mlp.yaml", {"optim.lr": {"loguniform": [1e-3, 1.0], "grid": 8}})
    >>> result["best"]["params"], result["best"]["value"]

    strategy: grid (every point; continuous ranges need `grid: N`), random or tpe (`trials`
    samples, default 20). metric: a train.* or val.* metric, the value each trial is judged by
    (`direction` defaults to maximize for accuracy, minimize for losses). packed: train trials that
    share a shape together (trainlab.packed), at most `pack_size` at once. storage: default a
    journal file in `out`; a postgresql:// or sqlite:/// URL shares the study `study` between any
    number of workers (heartbeats every `heartbeat` s; a dead worker's trials are retried).
    resume: a previous search's out directory, continued without redoing finished trials.
    pruner: none, median, halving or hyperband (Optuna's), on the per-epoch metric.
    All bad input is a ConfigError raised before any training.
    """
    optuna = _optuna()
    if resume is not None:
        out_dir = Path(resume)
        saved = out_dir / "search.yaml"
        if not saved.is_file():
            raise ConfigError(f"'{resume}' is not a search directory: it has no search.yaml. Give the --out folder "
                              "of an earlier `trainlab search`.")
        state = yaml.safe_load(saved.read_text())
        cfg = build_config(state["config"])
        params = load_space(state["space"])
        opts = _Options(**state["options"])
        if storage is not None:
            opts.storage = storage
    else:
        if config is None or space is None:
            raise ConfigError("trainlab search needs -c CONFIG and -s SPACE (or --resume DIR).")
        cfg = config if isinstance(config, Config) else (build_config(config) if isinstance(config, dict)
                                                         else load_config(config))
        params = load_space(space)
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
        _check_metric(metric)
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
        opts = _Options(strategy=strategy, trials=budget or DEFAULT_TRIALS, metric=metric,
                        direction=direction or _default_direction(metric), packed=packed, pack_size=pack_size,
                        storage=storage, study=study or "search", pruner=pruner, seed=seed, heartbeat=heartbeat)
        out_dir = Path(out) if out is not None else _default_out(cfg.name)
    check_space(cfg, params)
    metric_split, metric_name = _check_metric(opts.metric)

    # Data: loaded once (per distinct data config), trials see it without the test split.
    from . import data as data_module
    cache: dict[str, Any] = {}

    def splits_for(c: Config):
        key = json.dumps(c.data.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = data_module.load(c, data_dir)
        return cache[key]

    first_splits = splits_for(cfg)
    task_metrics = ("loss", "accuracy") if first_splits.task == "classification" else ("loss", "rmse", "mae")
    if metric_name not in task_metrics:
        raise ConfigError(f"--metric {opts.metric}: a {first_splits.task} run has "
                          f"{', '.join(metric_split + '.' + m for m in task_metrics)}.")
    if metric_split == "val" and first_splits.val is None:
        raise ConfigError(f"--metric {opts.metric} needs a validation split, but data.val_fraction=0.")

    if resume is None:
        _claim_out(out_dir, study is not None)
    storage_obj = open_storage(opts.storage, out_dir, opts.heartbeat)  # unreachable: ConfigError, now
    if resume is None:
        atomic_write_text(out_dir / "search.yaml", yaml.safe_dump(
            {"config": cfg.to_dict(), "space": _space_dict(params), "options": vars(opts)}, sort_keys=False))
    the_study = optuna.create_study(
        storage=storage_obj, study_name=opts.study, direction=opts.direction, load_if_exists=True,
        sampler=_sampler(opts.strategy, params, opts.seed), pruner=_pruner(opts.pruner, cfg.train.epochs))
    if the_study.direction.name.lower() != opts.direction:
        raise ConfigError(f"Study '{opts.study}' exists with direction {the_study.direction.name.lower()}; "
                          f"this search asks {opts.direction}. Use another --study name.")
    if opts.strategy != "grid" and the_study.trials:  # workers joining a study draw their own samples
        the_study.sampler = _sampler(opts.strategy, params, opts.seed + len(the_study.trials))
    heartbeat_obj = _Heartbeat(storage_obj, opts.heartbeat if opts.storage and not opts.storage.startswith("journal:")
                               else None)
    if resume is not None and not heartbeat_obj.enabled:
        _requeue_interrupted(the_study)

    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    runner = _Runner(the_study, cfg, params, opts, out_dir, splits_for, heartbeat_obj, say, data_dir)
    try:
        runner.run()
    finally:
        heartbeat_obj.close()
    return _conclude(the_study, cfg, params, opts, out_dir, splits_for, say)


def _default_out(name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-search-{stamp}"
    path, n = base, 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def _claim_out(out_dir: Path, joining: bool) -> None:
    """A fresh folder, or (with --study) the folder of a search other workers run."""
    if out_dir.exists() and any(out_dir.iterdir()):
        ours = {"search.yaml", "journal.log", "trials", "results.csv", "best.yaml", "report.html", "search.json"}
        if joining and all(f.name in ours or f.name.startswith(("journal.log", ".")) for f in out_dir.iterdir()):
            return  # another worker's search of the same study (it may be starting this very moment)
        raise ConfigError(f"Output folder '{out_dir}' already holds files. Choose another --out, continue that "
                          f"search with `trainlab search --resume {out_dir}`, or join it as another worker with "
                          "--study NAME.")
    out_dir.mkdir(parents=True, exist_ok=True)


def _space_dict(params: dict[str, Param]) -> dict:
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


def _requeue_interrupted(study) -> None:
    """Trials a killed process left RUNNING: failed, and queued again (as a dead RDB worker's are)."""
    from optuna.trial import TrialState
    callback = _retry_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failure", "interrupted")
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except Exception:
            continue
        callback(study, study._storage.get_trial(t._trial_id))


class _Runner:
    """The worker loop: ask a pack of trials, train them (packed or one by one), tell the results."""

    def __init__(self, study, cfg: Config, params: dict[str, Param], opts: _Options, out_dir: Path, splits_for,
                 heartbeat: _Heartbeat, say, data_dir):
        self.study, self.cfg, self.params, self.opts = study, cfg, params, opts
        self.out_dir, self.splits_for, self.heartbeat, self.say = out_dir, splits_for, heartbeat, say
        self.data_dir = data_dir
        self.split, self.name = opts.metric.split(".", 1)

    def pack_cap(self) -> int:
        if self.opts.pack_size is not None:
            return self.opts.pack_size
        if not self.opts.packed:
            return 1
        cap = TPE_PACK if self.opts.strategy == "tpe" else MAX_PACK
        # Activation memory per member: a batch through every hidden layer, a few copies (forward,
        # backward, dropout masks), in the config's dtype; plus the evaluation batch.
        c = self.cfg
        width = sum(c.model.hidden) + 16
        batch = max(c.train.batch_size, c.eval.batch_size) if c.optim.name != "gd" else 60000
        per_member = batch * width * (8 if c.train.dtype == "float64" else 4) * 6
        return max(1, min(cap, PACK_MEMORY // max(per_member, 1)))

    def run(self) -> None:
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState
        waited = False
        while True:
            if self.heartbeat.enabled:
                fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            left = self.opts.trials - len(_originals(trials))
            want = min(self.pack_cap(), len(waiting) + max(left, 0))
            if want <= 0:
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if running and self.heartbeat.enabled:
                    # Another worker's trials: if it dies, its trials come back as WAITING ones.
                    if not waited:
                        self.say(f"waiting for {len(running)} trial(s) other workers run")
                        waited = True
                    time.sleep(min(self.opts.heartbeat, 5))
                    continue
                return
            asked = []
            for _ in range(want):
                trial = self.study.ask()
                self.heartbeat.add(trial._trial_id)
                if self._surplus(trial):
                    continue
                asked.append(trial)
            if asked:
                self._train(asked)

    def _surplus(self, trial) -> bool:
        """A trial asked beyond the budget (two workers asked at once), or a grid point another
        trial already covers: told FAIL and marked surplus, never trained."""
        from optuna.trial import TrialState
        frozen = self.study._storage.get_trial(trial._trial_id)
        if _is_retry(frozen) or "fixed_params" in frozen.system_attrs:
            return False
        trials = self.study.get_trials(deepcopy=False)
        earlier = [t for t in _originals(trials) if t.number < trial.number]
        reason = None
        if len(earlier) >= self.opts.trials:
            reason = "over the trial budget"
        elif self.opts.strategy == "grid":
            grid_id = frozen.system_attrs.get("grid_id")
            for t in trials:
                if t.number == trial.number or _is_surplus(t) or t.system_attrs.get("grid_id") != grid_id:
                    continue
                final_failure = t.state == TrialState.FAIL and t.user_attrs.get("failure") not in (None, "interrupted")
                if (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING) or final_failure
                        or (t.state == TrialState.RUNNING and t.number < trial.number)):
                    reason = f"grid point already taken by trial {t.number}"
                    break
        if reason is None:
            return False
        trial.set_user_attr("surplus", reason)
        _study_tell(self.study, trial, state=TrialState.FAIL)
        self.heartbeat.remove(trial._trial_id)
        return True

    def _train(self, asked: list) -> None:
        from .packed import pack_key
        jobs = []
        for trial in asked:
            values = _suggest(trial, self.params)
            try:
                cfg = trial_config(self.cfg, {**values, "train.progress": "none"},
                                   name=f"{self.cfg.name}-trial{trial.number}")
            except ConfigError as e:
                self._fail(trial, f"invalid config: {e}")
                continue
            jobs.append((trial, values, cfg))
        groups: dict[str, list] = {}
        singles = []
        for job in jobs:
            key = pack_key(job[2]) if self.opts.packed else None
            if key is None:
                singles.append(job)
            else:
                groups.setdefault(key, []).append(job)
        for key, group in groups.items():
            if len(group) == 1:
                singles += group
            else:
                self._train_pack(group)
        for job in singles:
            self._train_one(*job)

    def _run_dir(self, trial) -> Path:
        return self.out_dir / "trials" / f"{trial.number:04d}"

    def _train_pack(self, group: list) -> None:
        from optuna.trial import TrialState
        from .packed import train_packed
        splits = self.splits_for(group[0][2])
        pruned: set[int] = set()

        def on_epoch_end(index: int, epoch: int, row: dict) -> bool:
            trial = group[index][0]
            value = row.get(f"{self.split}_{self.name}")
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, epoch)
            if trial.should_prune():
                pruned.add(index)
                return True
            return False

        labels = ", ".join(str(t.number) for t, _, _ in group)
        self.say(f"trials {labels}: training {len(group)} as one pack")
        t0 = time.perf_counter()
        try:
            results = train_packed([c for _, _, c in group], outs=[self._run_dir(t) for t, _, _ in group],
                                   splits=replace(splits, test=None), on_epoch_end=on_epoch_end)
        except TrainlabError as e:
            for trial, _, _ in group:
                self._fail(trial, str(e))
            return
        seconds = time.perf_counter() - t0
        for index, ((trial, values, cfg), result) in enumerate(zip(group, results)):
            self._record(trial, values, result.summary, result.history, len(group))
            if result.summary.get("stopped_because") == "diverged":
                self._fail(trial, "diverged", values)
            elif index in pruned:
                self._tell(trial, values, TrialState.PRUNED)
            else:
                self._tell(trial, values, TrialState.COMPLETE, self._value(result.summary))
        self.say(f"trials {labels}: {seconds:.1f}s")

    def _train_one(self, trial, values: dict, cfg: Config) -> None:
        import optuna
        from optuna.trial import TrialState
        from .train import train
        splits = self.splits_for(cfg)

        def on_epoch_end(epoch: int, row: dict) -> None:
            value = row.get(f"{self.split}_{self.name}")
            if value is not None and math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        run_dir = self._run_dir(trial)
        try:
            result = train(cfg, out=run_dir, splits=replace(splits, test=None), on_epoch_end=on_epoch_end,
                           data_dir=self.data_dir)
        except optuna.TrialPruned:
            from .runs import RunDir
            self._record(trial, values, None, RunDir(run_dir).read_metrics(), 1)
            self._tell(trial, values, TrialState.PRUNED)
            return
        except Interrupted:
            raise  # Ctrl-C: the trial stays RUNNING; --resume (or another worker) runs it again
        except DivergedError as e:
            from .runs import RunDir
            self._record(trial, values, None, RunDir(run_dir).read_metrics(), 1)
            self._fail(trial, f"diverged: {str(e).splitlines()[0]}", values)
            return
        except TrainlabError as e:
            self._fail(trial, str(e), values)
            return
        self._record(trial, values, result.summary, result.history, 1)
        self._tell(trial, values, TrialState.COMPLETE, self._value(result.summary))

    def _value(self, summary: dict) -> Optional[float]:
        value = ((summary.get("metrics") or {}).get(self.split) or {}).get(self.name)
        return float(value) if value is not None and math.isfinite(value) else None

    def _record(self, trial, values: dict, summary: Optional[dict], history: list[dict], pack: int) -> None:
        """What results.csv and the report need, stored with the trial (every worker sees it)."""
        key = f"{self.split}_{self.name}"
        trial.set_user_attr("run_dir", str(self._run_dir(trial)))
        trial.set_user_attr("curve", [r.get(key) for r in history])
        trial.set_user_attr("pack_size", pack)
        if summary is not None:
            trial.set_user_attr("metrics", {s: m for s, m in summary.get("metrics", {}).items() if s != "test"})
            trial.set_user_attr("seconds", summary.get("seconds"))
            trial.set_user_attr("stopped_because", summary.get("stopped_because"))
        elif history:
            trial.set_user_attr("seconds", sum(r.get("seconds", 0.0) for r in history))

    def _tell(self, trial, values: dict, state, value: Optional[float] = None) -> None:
        from optuna.trial import TrialState
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        if state == TrialState.COMPLETE and value is None:
            self._fail(trial, f"no {self.opts.metric} in the run's summary", values)
            return
        if state == TrialState.COMPLETE:
            _study_tell(self.study, trial, value)
            self.say(f"trial {trial.number}: {shown}  {self.opts.metric} {value:.4f}")
        else:
            _study_tell(self.study, trial, state=state)
            self.say(f"trial {trial.number}: {shown}  {state.name.lower()}")
        self.heartbeat.remove(trial._trial_id)

    def _fail(self, trial, reason: str, values: Optional[dict] = None) -> None:
        from optuna.trial import TrialState
        trial.set_user_attr("failure", reason)
        _study_tell(self.study, trial, state=TrialState.FAIL)
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in (values or {}).items())
        self.say(f"trial {trial.number}: {shown}  failed: {reason.splitlines()[0]}")
        self.heartbeat.remove(trial._trial_id)


def _study_tell(study, trial, value: Optional[float] = None, state=None) -> None:
    """study.tell; GridSampler calls study.stop() when the grid is done, which only an optimize()
    loop may do: the trial is stored first (in a finally), so that RuntimeError is dropped."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, list) else str(v)


# ---------------------------------------------------------------- results


def _rows(study, params: dict[str, Param], metric: str) -> tuple[list[str], list[dict]]:
    """results.csv: one row per trial (surplus ones left out), its parameters, curve and metrics."""
    trials = [t for t in study.get_trials(deepcopy=False) if not _is_surplus(t)]
    epochs = max((len(t.user_attrs.get("curve") or []) for t in trials), default=0)
    metric_cols = []
    for t in trials:
        for split, values in (t.user_attrs.get("metrics") or {}).items():
            metric_cols += [f"{split}.{k}" for k in values if f"{split}.{k}" not in metric_cols]
    header = (["trial", "state", "value"] + list(params) + [f"{metric}@epoch{e}" for e in range(1, epochs + 1)]
              + metric_cols + ["seconds", "pack_size", "stopped_because", "retry_of", "failure", "run_dir"])
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "value": t.value}
        for key, p in params.items():
            row[key] = p.decode(t.params[key]) if key in t.params else None
        for e, v in enumerate(t.user_attrs.get("curve") or [], start=1):
            row[f"{metric}@epoch{e}"] = v
        for split, values in (t.user_attrs.get("metrics") or {}).items():
            for k, v in values.items():
                row[f"{split}.{k}"] = v
        row["seconds"] = t.user_attrs.get("seconds")
        row["pack_size"] = t.user_attrs.get("pack_size")
        row["stopped_because"] = t.user_attrs.get("stopped_because")
        row["retry_of"] = t.system_attrs.get("failed_trial")
        row["failure"] = t.user_attrs.get("failure")
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    return header, rows


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
                         for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _conclude(study, cfg: Config, params: dict[str, Param], opts: _Options, out_dir: Path, splits_for,
              say) -> dict:
    """results.csv, best.yaml, the best trial's one test evaluation, report.html, search.json."""
    from optuna.trial import TrialState
    header, rows = _rows(study, params, opts.metric)
    _write_csv(out_dir / "results.csv", header, rows)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    result: dict[str, Any] = {"best": None, "trials": len(complete), "out_dir": str(out_dir)}
    if not complete:
        say("no trial completed: see results.csv for the failures")
        atomic_write_json(out_dir / "search.json", result)
        return result
    best = study.best_trial
    best_params = {k: params[k].decode(v) for k, v in best.params.items() if k in params}
    result["best"] = {"params": best_params, "value": best.value, "trial": best.number}
    best_cfg = trial_config(cfg, best_params, name=cfg.name)
    text = (f"# Best of {len(complete)} trials of `trainlab search` ({opts.strategy}), by {opts.metric} = "
            f"{best.value:.6g} (trial {best.number}).\n# Train it: trainlab train -c best.yaml\n")
    atomic_write_text(out_dir / "best.yaml", text + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    test = _evaluate_on_test(best, best_cfg, splits_for)
    if test is not None:
        result["best"]["test"] = test
    atomic_write_json(out_dir / "search.json", result)
    try:
        _write_report(out_dir, study, params, opts, rows, result)
    except Exception as e:  # a report problem must not lose the search's results
        say(f"warning: report.html not written ({type(e).__name__}: {e})")
    shown = "  ".join(f"{k}={_fmt(v)}" for k, v in best_params.items())
    say(f"best trial {best.number}: {shown}  {opts.metric} {best.value:.4f}")
    if test is not None:
        say("test (best trial, evaluated once): " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return result


def _evaluate_on_test(best, best_cfg: Config, splits_for) -> Optional[dict]:
    """The best trial's final weights on the test split: the one time the test split is looked at."""
    import torch

    from . import checkpoint, losses
    from .data.loader import make_batches
    from .models import build_model
    from .runs import RunDir
    from .train import evaluate_model, resolve_device

    run_dir = best.user_attrs.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return None  # run by a worker on another machine: its run directory is there
    run = RunDir(Path(run_dir))
    cfg = load_config(run.config)
    summary = read_json(run.summary) if run.summary.is_file() else {}
    name = summary.get("final_checkpoint", "best")
    path = run.checkpoints / f"{name}.pt"
    if not path.is_file():
        path = run.best if run.best.is_file() else run.last
    if not path.is_file():
        return None
    splits = splits_for(cfg)
    if splits.test is None:
        return None
    device = resolve_device(cfg.train.device)
    dtype = getattr(torch, cfg.train.dtype)
    loss_name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    model = build_model(cfg.model, splits.input_shape, losses.num_outputs(loss_name, splits.task, splits.num_classes))
    model = model.to(device=device, dtype=dtype)
    checkpoint.load_weights(model, path)
    batches = make_batches(splits, "test", cfg.eval.batch_size, device, dtype, cfg)
    test = evaluate_model(model, batches, losses.build_loss(cfg, splits.task, splits.num_classes), splits.task,
                          loss_name, splits.extra.get("target_std", 1.0))
    if run.summary.is_file():  # the trial's summary gets its test metrics, as a train() run's has
        summary.setdefault("metrics", {})["test"] = test
        atomic_write_json(run.summary, summary)
    return test


# ---------------------------------------------------------------- report.html


def _axis_values(p: Param, values: list) -> tuple[np.ndarray, Optional[list[str]]]:
    """Numbers to plot a parameter's values at, and tick labels for a choice (its index)."""
    if p.kind == "choice":
        labels = [json.dumps(v) if not isinstance(v, str) else v for v in p.values]
        index = {json.dumps(v, sort_keys=True): i for i, v in enumerate(p.values)}
        return np.array([index.get(json.dumps(v, sort_keys=True), np.nan) for v in values], dtype=float), labels
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float), None


def plot_metric_vs_param(p: Param, rows: list[dict], metric: str, best: Optional[int]):
    """Each finished trial's value against one parameter (log axis where the range is log-spaced)."""
    from .report import new_figure
    fig, ax = new_figure()
    done = [r for r in rows if r["value"] is not None]
    x, labels = _axis_values(p, [r[p.key] for r in done])
    y = np.array([r["value"] for r in done], dtype=float)
    ax.scatter(x, y, s=18, color="tab:blue", alpha=0.8, label="trial")
    if best is not None:
        b = [i for i, r in enumerate(done) if r["trial"] == best]
        if b:
            ax.scatter(x[b], y[b], s=60, facecolors="none", edgecolors="tab:red", linewidths=1.5, label="best")
    if labels is not None:
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8, rotation=20 if len(labels) > 4 else 0)
    elif p.log_axis:
        ax.set_xscale("log")
    ax.set_xlabel(p.key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {p.key}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_heatmap(pa: Param, pb: Param, rows: list[dict], metric: str):
    """A two-parameter grid: the value of each cell (the mean over repeats), written in it."""
    from .report import new_figure
    va, vb = pa.grid_values(), pb.grid_values()
    grid = np.full((len(vb), len(va)), np.nan)
    counts = np.zeros_like(grid)
    ka = {json.dumps(v, sort_keys=True): i for i, v in enumerate(va)}
    kb = {json.dumps(v, sort_keys=True): i for i, v in enumerate(vb)}
    for r in rows:
        i, j = kb.get(json.dumps(r[pb.key], sort_keys=True)), ka.get(json.dumps(r[pa.key], sort_keys=True))
        if i is None or j is None or r["value"] is None:
            continue
        grid[i, j] = r["value"] if counts[i, j] == 0 else (grid[i, j] * counts[i, j] + r["value"]) / (counts[i, j] + 1)
        counts[i, j] += 1
    fig, ax = new_figure((max(5.0, 0.5 * len(va) + 2), max(3.5, 0.4 * len(vb) + 1.5)))
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(range(len(va)))
    ax.set_xticklabels([_fmt(v) for v in va], fontsize=7, rotation=45)
    ax.set_yticks(range(len(vb)))
    ax.set_yticklabels([_fmt(v) for v in vb], fontsize=7)
    if len(va) * len(vb) <= 100:
        for i in range(len(vb)):
            for j in range(len(va)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xlabel(pa.key)
    ax.set_ylabel(pb.key)
    ax.set_title(f"{metric} over the grid")
    return fig


def plot_parallel_coordinates(params: dict[str, Param], rows: list[dict], metric: str, direction: str):
    """One line per finished trial through an axis per parameter and the metric, coloured by value."""
    from matplotlib import colormaps
    from .report import new_figure
    done = [r for r in rows if r["value"] is not None]
    fig, ax = new_figure((max(5.0, 1.6 * (len(params) + 1)), 3.8))
    names = list(params) + [metric]
    columns, ticks = [], []
    for p in params.values():
        x, labels = _axis_values(p, [r[p.key] for r in done])
        if p.log_axis:
            x = np.log10(x)
        lo, hi = np.nanmin(x) if len(x) else 0.0, np.nanmax(x) if len(x) else 1.0
        span = hi - lo if hi > lo else 1.0
        columns.append((x - lo) / span)
        if labels is not None:
            ticks.append([((i - lo) / span, label) for i, label in enumerate(labels)])
        else:
            values = [lo, hi]
            ticks.append([((v - lo) / span, _fmt(10 ** v if p.log_axis else v)) for v in values])
    y = np.array([r["value"] for r in done], dtype=float)
    lo, hi = (np.nanmin(y), np.nanmax(y)) if len(y) else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    columns.append((y - lo) / span)
    ticks.append([(0.0, f"{lo:.4g}"), (1.0, f"{hi:.4g}")])
    data = np.stack(columns, axis=1) if done else np.zeros((0, len(names)))
    cmap = colormaps["viridis"]
    order = np.argsort(y if direction == "maximize" else -y)  # the best drawn last, on top
    for i in order:
        ax.plot(range(len(names)), data[i], color=cmap(float(columns[-1][i])), alpha=0.7, linewidth=1)
    for j, axis_ticks in enumerate(ticks):
        ax.axvline(j, color="black", linewidth=0.8)
        for pos, label in axis_ticks:
            if np.isfinite(pos):
                ax.text(j + 0.03, pos, label, fontsize=7, va="center")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("parallel coordinates (colour: " + metric + ")")
    return fig


def _write_report(out_dir: Path, study, params: dict[str, Param], opts: _Options, rows: list[dict],
                  result: dict) -> Path:
    """report.html: the best trial, metric vs each parameter, heat map, parallel coordinates, curves."""
    from .report import (curve_metrics, escape, html_image, html_note, html_page, html_section, html_table,
                         plot_learning_curves)
    best = result.get("best") or {}
    best_number = best.get("trial")
    sections = []
    lines = [f"<p>Best trial <b>{escape(best_number)}</b>: {escape(opts.metric)} = "
             f"<b>{escape(_fmt(best.get('value')))}</b> "
             f"({escape(opts.direction)}), chosen on {escape(opts.metric.split('.')[0])}; parameters "
             + ", ".join(f"<code>{escape(k)}={escape(_fmt(v))}</code>" for k, v in (best.get("params") or {}).items())
             + ".</p>"]
    if best.get("test"):
        lines.append("<p>Test split, evaluated once on the best trial: "
                     + ", ".join(f"{escape(k)} {v:.4f}" for k, v in best["test"].items()) + ".</p>")
    lines.append(html_note("Train it again: ", f"trainlab train -c {out_dir / 'best.yaml'}"))
    sections.append(html_section("best", "Best trial", "".join(lines)))
    figs = [html_image(plot_metric_vs_param(p, rows, opts.metric, best_number), f"{opts.metric} vs {p.key}")
            for p in params.values()]
    sections.append(html_section("params", "Metric vs each parameter", f"<div class='figs'>{''.join(figs)}</div>"))
    plist = list(params.values())
    if opts.strategy == "grid" and len(plist) == 2:
        heatmap = plot_heatmap(plist[0], plist[1], rows, opts.metric)
        sections.append(html_section("heatmap", "Heat map", html_image(heatmap, "heat map of the grid")))
    if len(plist) >= 2 and any(r["value"] is not None for r in rows):
        sections.append(html_section("parallel", "Parallel coordinates",
                                     html_image(plot_parallel_coordinates(params, rows, opts.metric, opts.direction),
                                            "parallel coordinates")))
    run_dir = next((r["run_dir"] for r in rows if r["trial"] == best_number), None)
    if run_dir and (Path(run_dir) / "metrics.jsonl").is_file():
        from .runs import RunDir
        history = RunDir(Path(run_dir)).read_metrics()
        summary = read_json(Path(run_dir) / "summary.json") if (Path(run_dir) / "summary.json").is_file() else {}
        curves = [html_image(plot_learning_curves(history, summary.get("best_epoch"), m), f"best trial's {m}")
                  for m in curve_metrics(history)]
        sections.append(html_section("curves", "Best trial's curves", f"<div class='figs'>{''.join(curves)}</div>"))
    header = ["trial", "state", "value", *params, "seconds"]
    ranked = sorted(rows, key=lambda r: (r["value"] is None,
                                         -(r["value"] or 0) if opts.direction == "maximize" else (r["value"] or 0)))
    table = html_table(header, [[str(r["trial"]), r["state"], r["value"], *[_fmt(r[k]) for k in params], r["seconds"]]
                                for r in ranked])
    sections.append(html_section("trials", "Trials", f"<div class='wide'>{table}</div>"))
    subtitle = f"{escape(out_dir)} · {escape(opts.strategy)} · {len(rows)} trials · study {escape(opts.study)}"
    path = out_dir / "report.html"
    atomic_write_text(path, html_page(f"trainlab search: {out_dir.name}", subtitle, sections))
    return path
