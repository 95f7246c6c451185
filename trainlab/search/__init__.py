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

The package, one job a module: spaces.py (the space, a trial's config), options.py (what was
asked: options, out folder, search.yaml), storage.py (Optuna's storage, heartbeats), study.py
(samplers, pruners, trial bookkeeping), runner.py (trials trained, packed or one by one),
results.py (results.csv, best.yaml, the test evaluation), plots.py and page.py (report.html).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from ..config import Config, build_config, load_config
from ..errors import ConfigError
from ..runs import RunLock
from .options import (DEFAULT_TRIALS, check_metric, claim_out, default_out, new_options, read_request,
                      write_request)
from .plots import plot_heatmap, plot_metric_vs_param, plot_parallel_coordinates
from .results import conclude
from .runner import MAX_PACK, PACK_MEMORY, TPE_PACK, Runner
from .spaces import KINDS, MAX_INT_GRID, Param, check_space, load_space, trial_config
from .storage import Heartbeat, import_optuna, open_storage, requeue_interrupted
from .study import PRUNERS, STRATEGIES, make_pruner, make_sampler

__all__ = ["search", "Param", "load_space", "check_space", "trial_config", "open_storage", "plot_metric_vs_param",
           "plot_heatmap", "plot_parallel_coordinates", "STRATEGIES", "PRUNERS", "KINDS", "MAX_INT_GRID",
           "DEFAULT_TRIALS", "MAX_PACK", "PACK_MEMORY", "TPE_PACK"]


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
    import_optuna()  # not installed: ConfigError naming the extra, before anything else
    if resume is not None:
        out_dir, cfg, params, opts = read_request(resume, storage)
    else:
        if config is None or space is None:
            raise ConfigError("trainlab search needs -c CONFIG and -s SPACE (or --resume DIR).")
        cfg = config if isinstance(config, Config) else (build_config(config) if isinstance(config, dict)
                                                         else load_config(config))
        params = load_space(space)
        opts = new_options(params, strategy=strategy, trials=trials, metric=metric, direction=direction,
                           packed=packed, pack_size=pack_size, storage=storage, study=study, pruner=pruner,
                           seed=seed, heartbeat=heartbeat)
        out_dir = Path(out) if out is not None else default_out(cfg.name)
    check_space(cfg, params)
    metric_split, metric_name = check_metric(opts.metric)

    # Data: loaded once (per distinct data config), trials see it without the test split.
    from .. import data as data_module
    cache: dict[str, Any] = {}

    def splits_for(c: Config):
        key = json.dumps(c.data.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = data_module.load(c, data_dir)
        return cache[key]

    first_splits = splits_for(cfg)
    task_metrics = {"classification": ("loss", "accuracy"), "regression": ("loss", "rmse", "mae"),
                    "language_model": ("loss", "accuracy", "perplexity",
                                       f"bits_per_{first_splits.extra.get('unit')}")}[first_splits.task]
    if metric_name not in task_metrics:
        raise ConfigError(f"--metric {opts.metric}: a {first_splits.task} run has "
                          f"{', '.join(metric_split + '.' + m for m in task_metrics)}.")
    if metric_split == "val" and first_splits.val is None:
        raise ConfigError(f"--metric {opts.metric} needs a validation split, but data.val_fraction=0.")

    if resume is None:
        claim_out(out_dir, study is not None)
    # A search alone in its folder holds the folder's lock (workers of one shared study share theirs):
    # a train or a second search pointed at it is refused, naming this process's pid and host.
    alone = study is None if resume is None else opts.storage is None
    lock = RunLock(out_dir).acquire() if alone else None
    try:
        return _run_search(cfg, params, opts, out_dir, splits_for, resume, quiet, data_dir)
    finally:
        if lock is not None:
            lock.release()


def _run_search(cfg: Config, params, opts, out_dir: Path, splits_for, resume, quiet: bool, data_dir) -> dict:
    """search()'s study, trials and conclusion, once its options, data and folder are settled."""
    optuna = import_optuna()
    storage_obj = open_storage(opts.storage, out_dir, opts.heartbeat)  # unreachable: ConfigError, now
    if resume is None:
        write_request(out_dir, cfg, params, opts)
    the_study = optuna.create_study(
        storage=storage_obj, study_name=opts.study, direction=opts.direction, load_if_exists=True,
        sampler=make_sampler(opts.strategy, params, opts.seed), pruner=make_pruner(opts.pruner, cfg.train.epochs))
    if the_study.direction.name.lower() != opts.direction:
        raise ConfigError(f"Study '{opts.study}' exists with direction {the_study.direction.name.lower()}; "
                          f"this search asks {opts.direction}. Use another --study name.")
    if opts.strategy != "grid" and the_study.trials:  # workers joining a study draw their own samples
        the_study.sampler = make_sampler(opts.strategy, params, opts.seed + len(the_study.trials))
    heartbeat_obj = Heartbeat(storage_obj, opts.heartbeat if opts.storage and not opts.storage.startswith("journal:")
                              else None)
    if resume is not None and not heartbeat_obj.enabled:
        requeue_interrupted(the_study)

    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    runner = Runner(the_study, cfg, params, opts, out_dir, splits_for, heartbeat_obj, say, data_dir)
    try:
        runner.run()
    finally:
        heartbeat_obj.close()
    return conclude(the_study, cfg, params, opts, out_dir, splits_for, say)
