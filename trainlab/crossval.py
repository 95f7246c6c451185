"""Cross-validation: folds -> train() per fold -> mean ± std and a 95% interval.

    >>> cv = cross_validate("examples/seed_mlp.yaml", folds=5)
    >>> cv["mean"], cv["ci95"]

The folds cover the training data of the usual split (its train + val parts, after `data.limit`);
the test split is never trained or selected on. scikit-learn's RepeatedStratifiedKFold
(classification) or RepeatedKFold (regression, or --no-stratified) makes the folds, seeded by
`data.split_seed`. Each fold is an ordinary `train()` run on that fold's training part with the
held-out fold as its validation split; normalisation statistics (image channel mean/std, tabular
standardisation, regression target scaling) are refitted on the fold's training part alone, so
nothing about the held-out fold leaks into training.

Writes into OUT (default runs/<name>-cv-<timestamp>): one run directory per fold, `config.yaml`,
`cv.json` and `report.html`. The helpers below (derive, output_dir, summarise, metric_value,
plot_distribution) are shared by lrfind.py and compare.py.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import data
from .config import Config, build_config, save_config, set_dotted
from .data import ArraySplit, Splits
from .errors import ConfigError
from .runs import RunDir, atomic_write_json, atomic_write_text

# ---------------------------------------------------------------- helpers shared by the model-selection commands


def prepare(config: Config | dict | str | Path) -> Config:
    """A Config from a Config, a plain dict or a YAML path (as train() accepts)."""
    from .train import prepare_config
    return prepare_config(config)


def derive(cfg: Config, changes: dict[str, Any], quiet: bool = True) -> Config:
    """`cfg` with dotted keys changed, validated again; `quiet` drops the unused-optimiser-key warnings
    that validating `cfg` itself already gave."""
    raw = cfg.to_dict()
    for key, value in changes.items():
        set_dotted(raw, key, value)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return build_config(raw)


def inner_progress(cfg: Config) -> Config:
    """Inner train() runs print nothing unless the config asks for bars or lines explicitly:
    the command prints one line per finished run instead."""
    return derive(cfg, {"train.progress": "none"}) if cfg.train.progress == "auto" else cfg


def output_dir(out: Optional[str | Path], name: str) -> Path:
    """`out` (new or empty), else runs/<name>-<timestamp>: RunDir.create's rules, without checkpoints/."""
    path = RunDir.create(out, name).path
    (path / "checkpoints").rmdir()
    return path


def default_metric(task: str) -> str:
    return "val.accuracy" if task == "classification" else "val.loss"


def metric_value(summary: dict, metric: str) -> float:
    """summary.json's value of `metric` ('val.accuracy', 'test.loss', ...); NaN when the run has none."""
    split, _, name = metric.partition(".")
    value = ((summary.get("metrics") or {}).get(split) or {}).get(name)
    return float(value) if value is not None else math.nan


def check_metric(metric: str, task: str) -> None:
    split, _, name = metric.partition(".")
    allowed = ("loss", "accuracy") if task == "classification" else ("loss", "rmse", "mae")
    if split not in ("train", "val", "test") or name not in allowed:
        raise ConfigError(f"--metric {metric!r} is not a metric of this task ({task}); use split.metric with "
                          f"split train, val or test and metric {', '.join(allowed)} (e.g. val.{allowed[-1]}).")


def summarise(values: Sequence[float]) -> dict:
    """mean, sample std (ddof=1) and the 95% interval of the mean from the t-distribution
    (mean ± t(0.975, n-1) · std / √n); std and ci95 are None for fewer than two values."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(x):
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(x) - 1)) * std / math.sqrt(len(x))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": int(len(x))}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plot_distribution(groups: dict[str, Sequence[float]], ylabel: str, title: str):
    """One box per group (median, quartiles, 1.5 IQR whiskers) with every value drawn as a point on
    it (jittered sideways) and the mean as a diamond. ``groups``: {label: values}."""
    from .report import SIZE, new_figure

    width = max(SIZE[0], 1.0 + 0.9 * len(groups))
    fig, ax = new_figure((min(width, 12.0), SIZE[1] + 0.3))
    labels = list(groups)
    values = [np.asarray([v for v in groups[k] if v is not None and math.isfinite(v)], float) for k in labels]
    positions = np.arange(1, len(labels) + 1)
    ax.boxplot(values, positions=positions, widths=0.5, showfliers=False,
               medianprops={"color": "tab:orange"}, boxprops={"color": "grey"}, whiskerprops={"color": "grey"},
               capprops={"color": "grey"})
    rng = np.random.default_rng(0)  # fixed jitter: the same page for the same numbers
    for pos, v in zip(positions, values):
        ax.scatter(pos + rng.uniform(-0.12, 0.12, len(v)), v, s=18, color="tab:blue", alpha=0.8, zorder=3)
        if len(v):
            ax.scatter([pos], [v.mean()], marker="D", s=30, color="black", zorder=4)
    ax.set_xticks(positions, labels, rotation=30 if max(map(len, labels), default=0) > 8 else 0,
                  ha="right" if max(map(len, labels), default=0) > 8 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return fig


# ---------------------------------------------------------------- folds


def check_counts(folds: int, repeats: int) -> None:
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds.")
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: give at least 1 repeat.")


def fold_indices(y: np.ndarray, folds: int, repeats: int, stratified: bool, seed: int
                 ) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """[(repeat, fold, train_index, held_out_index)], both 0-based; every example is held out exactly
    once per repeat. Errors (ConfigError) when the folds cannot be made."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    n = len(y)
    check_counts(folds, repeats)
    if folds > n:
        raise ConfigError(f"--folds {folds} is more than the {n} training examples; use at most {n} folds.")
    if stratified:
        labels, counts = np.unique(y, return_counts=True)
        smallest = int(counts.min())
        if folds > smallest:
            name = labels[counts.argmin()]
            raise ConfigError(
                f"--folds {folds} is more than the {smallest} examples of the smallest class ({name}): stratified "
                f"folds need every class in every fold. Use --folds {max(smallest, 2)} or fewer, "
                "more data (data.limit), or --no-stratified.")
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        splitter = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    out = []
    for i, (train_index, held_index) in enumerate(splitter.split(np.zeros((n, 1)), y if stratified else None)):
        out.append((i // folds, i % folds, np.sort(train_index), np.sort(held_index)))
    return out


def training_pool(cfg: Config, data_dir: Optional[str] = None) -> Splits:
    """The usual split with data.val_fraction=0: its train part is exactly train + val of the usual
    split (same data.split_seed, same data.limit), its test part the usual test split."""
    return data.load(derive(cfg, {"data.val_fraction": 0.0}), data_dir)


def fold_splits(pool: Splits, train_index: np.ndarray, held_index: np.ndarray) -> Splits:
    """Splits for one fold: pool.train[train_index] to train on, pool.train[held_index] as validation,
    the pool's test split; normalisation refitted on the fold's training part only."""
    train, val = pool.train.subset(train_index), pool.train.subset(held_index)
    fold = Splits(train=train, val=val, test=pool.test, task=pool.task, classes=pool.classes,
                  input_shape=pool.input_shape, is_image=pool.is_image, name=pool.name, white=pool.white)
    if pool.task == "regression":
        y = train.y.float()
        fold.extra["target_mean"] = float(y.mean())
        fold.extra["target_std"] = float(y.std().clamp_min(1e-12))
    if pool.is_image:
        fold.mean, fold.std = data.channel_stats(train)
    elif isinstance(train, ArraySplit) and "feature_mean" in pool.extra:
        # The pool is standardised with the pool's statistics; standardising again with the fold's
        # training part gives exactly (x - fold mean) / fold std of the raw features, since the two
        # affine maps compose. Recorded in raw units, as data.load records them.
        data._standardise(fold)
        m, s = np.asarray(pool.extra["feature_mean"]), np.asarray(pool.extra["feature_scale"])
        fold.extra["feature_mean"] = (m + s * np.asarray(fold.extra["feature_mean"])).tolist()
        fold.extra["feature_scale"] = (s * np.asarray(fold.extra["feature_scale"])).tolist()
    return fold


# ---------------------------------------------------------------- cross_validate


def cross_validate(config: Config | dict | str | Path, folds: int = 5, repeats: int = 1,
                   stratified: Optional[bool] = None, out: Optional[str | Path] = None,
                   data_dir: Optional[str] = None, metric: Optional[str] = None) -> dict:
    """K-fold cross-validation of `config`; returns cv.json's object.

    >>> cv = cross_validate("examples/seed_mlp.yaml", folds=5)
    >>> f"{cv['mean']:.4f} ± {cv['std']:.4f}"
    `stratified`: None = stratified for classification. `metric`: split.metric read from each fold's
    summary.json (default val.accuracy, or val.loss for regression): val is the held-out fold.
    """
    cfg = prepare(config)
    check_counts(folds, repeats)  # before any data is read
    if cfg.model.name == "gpt":
        raise ConfigError("trainlab cv does not fold a text stream: neighbouring windows share context, so "
                          "every fold would train on its own validation text. Compare language-model settings "
                          "on the held-out val split with `trainlab compare` (several seeds) instead.")
    pool = training_pool(cfg, data_dir)
    if stratified is None:
        stratified = pool.task == "classification"
    if stratified and pool.task != "classification":
        raise ConfigError("--stratified needs a classification task; this data is a regression set.")
    metric = metric or default_metric(pool.task)
    check_metric(metric, pool.task)
    y = pool.train.y.numpy()
    plan = fold_indices(y, folds, repeats, stratified, cfg.data.split_seed)

    path = output_dir(out, f"{cfg.name}-cv")
    save_config(cfg, path / "config.yaml")
    run_cfg = inner_progress(cfg)
    from .train import train

    per_fold, start = [], time.perf_counter()
    for repeat, fold, train_index, held_index in plan:
        name = f"fold-{fold + 1}" if repeats == 1 else f"repeat-{repeat + 1}-fold-{fold + 1}"
        result = train(run_cfg, out=path / name, data_dir=data_dir,
                       splits=fold_splits(pool, train_index, held_index))
        value = metric_value(result.summary, metric)
        per_fold.append({"fold": fold + 1, "repeat": repeat + 1, "run_dir": str(result.run_dir),
                         "n_train": int(len(train_index)), "n_held_out": int(len(held_index)),
                         "value": value, "epochs_run": result.summary.get("epochs_run"),
                         "best_epoch": result.summary.get("best_epoch"), "metrics": result.metrics})
        say(f"{name} of {folds}{f' (repeat {repeat + 1}/{repeats})' if repeats > 1 else ''}: "
            f"{metric} {value:.4f}  ({result.summary['seconds']:.1f}s)")
    values = [p["value"] for p in per_fold]
    stats = summarise(values)
    cv = {"metric": metric, "folds": values, "mean": stats["mean"], "std": stats["std"], "ci95": stats["ci95"],
          "n_folds": folds, "repeats": repeats, "stratified": bool(stratified), "n_examples": int(len(y)),
          "split_seed": cfg.data.split_seed, "seconds": time.perf_counter() - start, "out_dir": str(path),
          "report": str(path / "report.html"), "per_fold": per_fold}
    atomic_write_json(path / "cv.json", cv)
    atomic_write_text(path / "report.html", render_cv_report(cv, path))
    return cv


def format_cv(cv: dict) -> str:
    """The lines `trainlab cv` prints."""
    ci = cv["ci95"]
    return (f"{cv['metric']}: {cv['mean']:.4f} ± {cv['std']:.4f} (std over {len(cv['folds'])} folds), "
            f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}]\nreport: {cv['report']}\nout: {cv['out_dir']}")


def render_cv_report(cv: dict, path: Path) -> str:
    """cv.json as one self-contained page in report.py's style: summary, box plot, fold curves, config."""
    from .report import (curve_metrics, escape, html_image, html_note, html_page, html_section, html_table,
                         load_run, plot_comparison)

    metric = cv["metric"]
    ci = cv["ci95"] or [None, None]
    head = html_table(["", "value"], [
        ("metric", metric), ("mean", cv["mean"]), ("std (ddof=1)", cv["std"]), ("95% CI low", ci[0]),
        ("95% CI high", ci[1]), ("folds", cv["n_folds"]), ("repeats", cv["repeats"]),
        ("stratified", cv["stratified"]), ("training examples", cv["n_examples"]),
        ("data.split_seed", cv["split_seed"]), ("seconds", cv["seconds"])])
    note = html_note("The interval is mean ± t(0.975, n−1)·std/√n over the fold values. Folds share training "
                     "data, so it is approximate (and narrower than the truth with repeats); the test split was "
                     "not used.")
    sections = [html_section("summary", "Cross-validation", head + note)]

    groups = {"all folds": cv["folds"]}
    if cv["repeats"] > 1:
        groups.update({f"repeat {r}": [p["value"] for p in cv["per_fold"] if p["repeat"] == r]
                       for r in range(1, cv["repeats"] + 1)})
    fig = plot_distribution(groups, metric, f"{metric} per held-out fold")
    sections.append(html_section("folds", "Per-fold metric", html_image(fig, f"{metric} per fold")))

    runs = {}
    for p in cv["per_fold"]:
        name = f"fold {p['fold']}" if cv["repeats"] == 1 else f"r{p['repeat']} fold {p['fold']}"
        runs[name] = load_run(p["run_dir"])
    curves = {n: r.rows for n, r in runs.items()}
    metrics = curve_metrics(next(iter(curves.values()), []))
    figs = [html_image(plot_comparison(curves, m, {n: r.best_epoch for n, r in runs.items()}), f"{m} of every fold")
            for m in metrics]
    body = (html_note("Validation (solid) is the held-out fold; train dashed.")
            + f"<div class='figs'>{''.join(figs)}</div>")
    sections.append(html_section("curves", "Learning curves", body))

    cols = sorted({(s, k) for p in cv["per_fold"] for s, m in (p["metrics"] or {}).items() for k in (m or {})},
                  key=lambda sk: ({"val": 0, "test": 1, "train": 2}.get(sk[0], 3), sk[1]))
    rows = [[f"{p['repeat']}.{p['fold']}", p["value"], p["n_train"], p["n_held_out"], p["epochs_run"],
             p["best_epoch"]] + [((p["metrics"] or {}).get(s) or {}).get(k) for s, k in cols]
            for p in cv["per_fold"]]
    table = html_table(["repeat.fold", metric, "train n", "held-out n", "epochs", "best epoch"]
                       + [f"{s} {k}" for s, k in cols], rows)
    dirs = "".join(f"<li>{escape(p['run_dir'])}</li>" for p in cv["per_fold"])
    sections.append(html_section("table", "Folds", f"<div class='wide'>{table}</div><ul>{dirs}</ul>"))
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else ""
    sections.append(html_section("config", "Config", f"<pre>{escape(config_text)}</pre>"))
    subtitle = escape(f"{path} · {cv['n_folds']} folds × {cv['repeats']} repeats · "
                      f"{metric} {cv['mean']:.4f} ± {cv['std']:.4f}")
    return html_page(f"trainlab cv: {path.name}", subtitle, sections)
