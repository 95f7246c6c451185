"""Comparisons over train(): one setting per value of a config key, several seeds each (compare),
and MLP depth x width against train and validation accuracy (sweep_size).

    >>> cmp = compare("examples/seed_mlp.yaml", {"optim.name": ["sgd", "adam"]}, seeds=3)
    >>> [(s["label"], s["metrics"]["val.accuracy"]["mean"], s["p_value"]) for s in cmp["settings"]]
    >>> sweep = sweep_size("examples/seed_mlp.yaml", widths=[32, 128, 512], depths=[1, 2])

compare: for every value (the cartesian product when several keys vary), `seeds` runs with
train.seed = 0..seeds-1 and everything else equal (the data split is the same: data.split_seed is
not varied). The final metrics of summary.json are tabled as mean ± std over the seeds. Whether a
setting differs from the best one by more than seed noise is a paired t-test across seeds
(scipy.stats.ttest_rel; seed i of one setting is paired with seed i of the other, which share the
initialisation seed and the batch order), two-sided, flagged at p < 0.05. The p-values are not
corrected for multiple comparisons: with many settings, read a p just under 0.05 with care.

sweep_size: an MLP with `depth` hidden layers of `width` units for every (depth, width), one run
each; parameters against the final train and validation accuracy (or loss), the capacity curve.
"""

from __future__ import annotations

import difflib
import io
import itertools
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import data
from .config import KNOWN_KEYS, Config, parse_override, save_config
from .crossval import (check_metric, default_metric, derive, inner_progress, metric_value,
                       output_dir, prepare, say, summarise)
from .errors import ConfigError
from .optim import higher_is_better
from .runs import atomic_write_bytes, atomic_write_json, atomic_write_text

ALPHA = 0.05  # significance level of the paired t-test
LEAF_KEYS = [k for k in KNOWN_KEYS if not any(other.startswith(k + ".") for other in KNOWN_KEYS)]
SPLIT_ORDER = {"val": 0, "test": 1, "train": 2}

# ---------------------------------------------------------------- --vary


def split_values(text: str) -> list[str]:
    """'sgd,adam' -> ['sgd', 'adam']; commas inside brackets, braces or quotes do not split
    ('[64],[128,64]' -> ['[64]', '[128,64]']). When the text holds a ';' outside brackets, values are
    split on ';' only ('[64];[128,64]'), for values whose commas would otherwise be ambiguous."""
    sep = ";" if _top_level(text, ";") else ","
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts]


def _top_level(text: str, sep: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == sep and depth == 0:
            return True
    return False


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """'optim.name=sgd,adam' -> ('optim.name', ['sgd', 'adam']); each value is read as YAML, exactly as an
    override is (config.parse_override: '0.1' is a float, '[64,32]' a list, 'null' None)."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or not raw.strip():
        raise ConfigError(f"--vary {text!r} must look like KEY=v1,v2,... e.g. --vary optim.name=sgd,adam "
                          "or --vary 'model.hidden=[64],[128,64]'.")
    values = []
    for part in split_values(raw):
        if not part:
            raise ConfigError(f"--vary {text!r} has an empty value; separate values with ',' (or ';').")
        values.append(parse_override(f"{key}={part}")[1])
    return key, values


def parse_varies(texts: Sequence[str]) -> dict[str, list[Any]]:
    """Several --vary arguments -> {key: values}; a key given twice is an error."""
    vary: dict[str, list[Any]] = {}
    for text in texts:
        key, values = parse_vary(text)
        if key in vary:
            raise ConfigError(f"--vary {key} is given twice; list all its values in one --vary.")
        vary[key] = values
    return vary


def resolved_values(cfg: Config, keys: Sequence[str]) -> dict[str, Any]:
    """The values `cfg` holds for dotted `keys`, as JSON-ready plain values: what validation made of
    the given ones ('1e-3', a string to YAML 1.1, becomes 0.001)."""
    out = {}
    for key in keys:
        node: Any = cfg.to_dict()
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def check_vary(vary: dict[str, Sequence[Any]]) -> None:
    """Every key a config leaf (with a close match suggested), never train.seed, at least one value."""
    if not vary:
        raise ConfigError("Give at least one --vary KEY=v1,v2,... (e.g. --vary optim.name=sgd,adam).")
    for key, values in vary.items():
        if key == "train.seed":
            raise ConfigError("--vary train.seed: compare sets train.seed itself (0..N-1 with --seeds N).")
        if key not in LEAF_KEYS:
            close = difflib.get_close_matches(key, LEAF_KEYS, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            what = "is a config section, not a key" if key in KNOWN_KEYS else "is not a config key"
            raise ConfigError(f"--vary {key}: '{key}' {what}.{hint} Keys are dotted, as in overrides "
                              "(optim.lr, model.hidden); see the config reference in README.md.")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"--vary {key}: give at least one value, e.g. --vary {key}=v1,v2.")
        seen = [json.dumps(v, sort_keys=True) for v in values]
        twice = next((v for v, s in zip(values, seen) if seen.count(s) > 1), None)
        if twice is not None:
            raise ConfigError(f"--vary {key} lists the value {twice!r} more than once; give each value once.")


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in setting.items())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:60] or "setting"


# ---------------------------------------------------------------- compare


def compare(config: Config | dict | str | Path, vary: dict[str, Sequence[Any]], seeds: int = 3,
            out: Optional[str | Path] = None, data_dir: Optional[str] = None,
            metric: Optional[str] = None) -> dict:
    """Train `config` under every value of `vary` (cartesian product over keys), `seeds` seeds each;
    returns compare.json's object.

    >>> cmp = compare("examples/seed_mlp.yaml", {"optim.name": ["sgd", "momentum", "adam"]}, seeds=3)
    >>> cmp["best"], [(s["label"], s["p_value"], s["significant"]) for s in cmp["settings"]]
    `metric` (split.metric of summary.json, default val.accuracy or val.loss for regression) picks the
    best setting and is the one tested; every final metric is tabled.
    """
    cfg = prepare(config)
    check_vary(vary)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1 seed (3 or more to test differences).")
    keys = list(vary)
    settings = [dict(zip(keys, combo)) for combo in itertools.product(*(list(vary[k]) for k in keys))]
    # Validate every setting before anything trains; a bad value names the key (config validation).
    # Warnings (an optimiser key the new optimiser ignores) are shown once per setting here.
    configs = [derive(cfg, s, quiet=False) for s in settings]
    settings = [resolved_values(c, keys) for c in configs]

    cache: dict[str, data.Splits] = {}  # data loaded once per distinct data section

    def splits_for(c: Config) -> data.Splits:
        key = json.dumps(c.data.model_dump(mode="json"), sort_keys=True)
        if key not in cache:
            cache[key] = data.load(c, data_dir)
        return cache[key]

    task = splits_for(configs[0]).task
    metric = metric or default_metric(task)
    check_metric(metric, task)
    path = output_dir(out, f"{cfg.name}-compare")
    save_config(cfg, path / "config.yaml")
    from .train import train

    results, start = [], time.perf_counter()
    for i, (setting, scfg) in enumerate(zip(settings, configs)):
        label = _label(setting)
        runs = []
        for seed in range(seeds):
            run_cfg = inner_progress(derive(scfg, {"train.seed": seed}))
            result = train(run_cfg, out=path / f"{i + 1:02d}-{_slug(label)}" / f"seed-{seed}", data_dir=data_dir,
                           splits=splits_for(run_cfg))
            runs.append({"seed": seed, "run_dir": str(result.run_dir), "metrics": result.metrics,
                         "epochs_run": result.summary.get("epochs_run"), "seconds": result.summary.get("seconds"),
                         "rows": result.history})
            say(f"{label} seed {seed}: " + ", ".join(
                f"{s}.{k} {v:.4f}" for s, m in result.metrics.items() if s != "train"
                for k, v in m.items() if isinstance(v, float)))
        results.append({"label": label, "values": setting, "runs": runs})

    cmp = _analyse(results, metric, seeds)
    cmp.update({"vary": {k: list(v) for k, v in vary.items()}, "seeds": seeds, "out_dir": str(path),
                "report": str(path / "report.html"), "seconds": time.perf_counter() - start})
    atomic_write_json(path / "compare.json", cmp)
    atomic_write_text(path / "report.html", render_compare_report(cmp, results, path))
    return cmp


def _analyse(results: list[dict], metric: str, seeds: int) -> dict:
    """Per setting: mean ± std of every final metric; the best setting on `metric`; paired t-tests."""
    from scipy import stats

    names = sorted({f"{s}.{k}" for r in results for run in r["runs"] for s, m in run["metrics"].items()
                    for k in (m or {})}, key=lambda n: (SPLIT_ORDER.get(n.split(".")[0], 3), n))
    settings = []
    for r in results:
        table = {}
        for name in names:
            values = [metric_value({"metrics": run["metrics"]}, name) for run in r["runs"]]
            table[name] = {**summarise(values), "values": values}
        settings.append({"label": r["label"], "values": r["values"], "metrics": table,
                         "run_dirs": [run["run_dir"] for run in r["runs"]]})
    up = higher_is_better(metric)
    means = [s["metrics"][metric]["mean"] for s in settings]
    ranked = [i for i in range(len(settings)) if means[i] is not None]
    best = (max if up else min)(ranked, key=lambda i: means[i]) if ranked else 0
    best_values = np.asarray(settings[best]["metrics"][metric]["values"], float)
    for i, s in enumerate(settings):
        values = np.asarray(s["metrics"][metric]["values"], float)
        s["diff_vs_best"] = (float(np.nanmean(values - best_values))
                             if np.isfinite(values - best_values).any() else None)
        if i == best:
            s.update(p_value=None, significant=False, verdict="best")
            continue
        finite = np.isfinite(values) & np.isfinite(best_values)
        if finite.sum() < 2:
            p = None  # one seed: no spread to test against
        elif np.all(values[finite] == best_values[finite]):
            p = 1.0   # identical results: no difference at all
        else:
            p = float(stats.ttest_rel(values[finite], best_values[finite]).pvalue)
        significant = p is not None and math.isfinite(p) and p < ALPHA
        s.update(p_value=p, significant=significant,
                 verdict=("significantly worse" if significant else
                          "not distinguishable from seed noise" if p is not None else "untested (one seed)"))
    return {"metric": metric, "higher_is_better": up, "best": settings[best]["label"], "alpha": ALPHA,
            "test": "paired t-test across seeds (scipy.stats.ttest_rel), two-sided, vs the best setting",
            "settings": settings}


def mean_rows(runs: list[list[dict]]) -> list[dict]:
    """Per-epoch mean over seeds of metrics.jsonl rows (epochs a seed did not reach are left out)."""
    by_epoch: dict[int, list[dict]] = {}
    for rows in runs:
        for row in rows:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    out = []
    for epoch in sorted(by_epoch):
        group = by_epoch[epoch]
        keys = {k for r in group for k, v in r.items() if isinstance(v, (int, float)) and k != "epoch"}
        mean = {"epoch": epoch}
        for k in sorted(keys):
            vals = [float(r[k]) for r in group if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            mean[k] = float(np.mean(vals)) if vals else None
        out.append(mean)
    return out


def format_compare(cmp: dict) -> str:
    """The table `trainlab compare` prints: mean ± std per setting, p-value against the best."""
    metric = cmp["metric"]
    cols = [n for n in cmp["settings"][0]["metrics"] if not n.startswith("train.")]
    width = max(len(s["label"]) for s in cmp["settings"]) + 2
    lines = ["setting".ljust(width) + "".join(f"{c:>20}" for c in cols) + f"{'p vs best':>12}  verdict"]
    for s in cmp["settings"]:
        cells = "".join(f"{_pm(s['metrics'][c]):>20}" for c in cols)
        p = "–" if s["p_value"] is None else f"{s['p_value']:.3g}"
        lines.append(s["label"].ljust(width) + cells + f"{p:>12}  {s['verdict']}")
    lines.append(f"best on {metric}: {cmp['best']} ({cmp['seeds']} seeds; paired t-test, p < {cmp['alpha']} "
                 "flagged)")
    lines.append(f"report: {cmp['report']}")
    return "\n".join(lines)


def _pm(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" if stat["std"] is not None else f"{stat['mean']:.4f}"


def render_compare_report(cmp: dict, results: list[dict], path: Path) -> str:
    """compare.json as one page in report.py's style: table, final-metric spread, mean curves, config."""
    from .crossval import plot_distribution
    from .report import (curve_metrics, escape, html_image, html_note, html_page, html_section, html_table,
                         plot_comparison)

    metric = cmp["metric"]
    names = list(cmp["settings"][0]["metrics"])
    rows = []
    for s in cmp["settings"]:
        p = s["p_value"]
        rows.append([s["label"]] + [_pm(s["metrics"][n]) for n in names]
                    + [None if p is None else float(f"{p:.4g}"), s["verdict"]])
    table = html_table(["setting"] + [f"{n} (mean ± std)" for n in names] + [f"p vs best ({metric})", "verdict"],
                       rows)
    note = html_note(f"{cmp['seeds']} seeds per setting (train.seed 0..{cmp['seeds'] - 1}). {cmp['test']}; "
                     f"p < {cmp['alpha']} is flagged as larger than seed noise (uncorrected for multiple comparisons). "
                     f"Best on {metric}: {cmp['best']}.")
    sections = [html_section("table", "Settings", f"<div class='wide'>{table}</div>" + note)]
    groups = {s["label"]: s["metrics"][metric]["values"] for s in cmp["settings"]}
    sections.append(html_section("spread", f"Final {metric} per seed",
                                 html_image(plot_distribution(groups, metric, f"final {metric}, one point per seed"),
                                        f"{metric} per setting")))
    curves = {r["label"]: mean_rows([run["rows"] for run in r["runs"]]) for r in results}
    metrics = curve_metrics(next(iter(curves.values()), []))
    figs = [html_image(plot_comparison(curves, m), f"mean {m} per setting") for m in metrics]
    sections.append(html_section("curves", "Learning curves (mean over seeds)",
                                 html_note("Validation solid, train dashed; each line is the mean over the seeds.")
                                 + f"<div class='figs'>{''.join(figs)}</div>"))
    dirs = "".join(f"<li>{escape(s['label'])}: " + ", ".join(escape(d) for d in s["run_dirs"]) + "</li>"
                   for s in cmp["settings"])
    sections.append(html_section("runs", "Runs", f"<ul>{dirs}</ul>"))
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else ""
    sections.append(html_section("config", "Base config", f"<pre>{escape(config_text)}</pre>"))
    vary = "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in cmp["vary"].items())
    return html_page(f"trainlab compare: {path.name}", escape(f"{path} · {vary}"), sections)


# ---------------------------------------------------------------- sweep_size

ACC_TOL = 0.005   # accuracy: a model within this of the best validation accuracy has saturated
ACC_GAP = 0.02    # accuracy: a train − val gap this much wider than the smallest model's has opened
LOSS_TOL = 0.02   # loss: within 2% of the best validation loss has saturated
LOSS_GAP = 0.10   # loss: a val − train gap wider than the smallest model's by 10% of val has opened


def sweep_size(config: Config | dict | str | Path, widths: Sequence[int], depths: Sequence[int],
               out: Optional[str | Path] = None, data_dir: Optional[str] = None) -> dict:
    """Train an MLP with `depth` hidden layers of `width` units for every (depth, width); returns
    sweep.json's object, the capacity curve: parameters against final train and val accuracy
    (loss for regression).

    >>> sweep = sweep_size("examples/seed_mlp.yaml", widths=[32, 128, 512], depths=[1, 2])
    >>> sweep["saturates_at"], sweep["gap_opens_at"]
    Marks: `saturates_at` is the smallest model (by parameters) whose val metric is within 0.005
    accuracy (2% of the loss) of the best; `gap_opens_at` the smallest whose generalisation gap
    (train − val accuracy) is wider than the smallest model's by more than 0.02 (val − train loss: by
    more than 10% of its val loss). Depth 0 is the linear model.
    """
    cfg = prepare(config)
    gpt = cfg.model.name == "gpt"
    if cfg.model.name != "mlp" and not gpt:
        raise ConfigError(f"sweep-size varies model.hidden of an MLP, or model.n_layer and model.n_embd of a "
                          f"gpt; this config has model.name={cfg.model.name}. Set model.name=mlp.")
    widths, depths = [int(w) for w in widths], [int(d) for d in depths]
    if not widths or not depths:
        raise ConfigError("Give at least one width and one depth, e.g. --widths 32,128,512 --depths 1,2.")
    if any(w < 1 for w in widths):
        raise ConfigError(f"--widths {widths}: every width must be >= 1.")
    if any(d < (1 if gpt else 0) for d in depths):
        raise ConfigError(f"--depths {depths}: every depth must be >= {1 if gpt else 0}"
                          f"{' (transformer blocks)' if gpt else ' (0 = a linear model)'}.")
    shapes = list(dict.fromkeys((d, w if d else 0) for d in depths for w in widths))  # depth 0 has no width

    splits = data.load(cfg, data_dir)
    task = splits.task
    metric = "accuracy" if task == "classification" else "loss"
    # A gpt's sizes are blocks x width; every run gets the same train.steps, so the same tokens.
    size_keys = (lambda d, w: {"model.n_layer": d, "model.n_embd": w}) if gpt else (
        lambda d, w: {"model.hidden": [w] * d})
    path = output_dir(out, f"{cfg.name}-sweep-size")
    save_config(cfg, path / "config.yaml")
    from .models import count_parameters
    from .train import train

    points, start = [], time.perf_counter()
    for depth, width in shapes:
        hidden = [width] * depth
        run_cfg = inner_progress(derive(cfg, size_keys(depth, width)))
        result = train(run_cfg, out=path / f"depth-{depth}-width-{width}", data_dir=data_dir, splits=splits)
        m = result.metrics
        point = {"depth": depth, "width": width, "hidden": hidden, "params": count_parameters(result.model),
                 "train": m.get("train", {}).get(metric), "val": (m.get("val") or {}).get(metric),
                 "test": (m.get("test") or {}).get(metric), "metrics": m, "run_dir": str(result.run_dir)}
        points.append(point)
        say(f"depth {depth} width {width}: {point['params']} parameters, train {metric} {point['train']:.4f}, "
            f"val {metric} {point['val'] if point['val'] is not None else math.nan:.4f}")
    points.sort(key=lambda p: (p["params"], p["depth"]))
    marks = _capacity_marks(points, metric)
    if gpt:
        marks["fit"] = fit_scaling_law(points)
    sweep = {"metric": metric, "points": points, **marks, "out_dir": str(path),
             "report": str(path / "report.html"), "plot": str(path / "capacity.png"),
             "seconds": time.perf_counter() - start,
             "rule": (f"saturates_at: the smallest model whose val {metric} is within "
                      + (f"{ACC_TOL} of the best; gap_opens_at: the smallest whose train - val accuracy gap is "
                         f"wider than the smallest model's by more than {ACC_GAP}" if metric == "accuracy" else
                         f"{LOSS_TOL:.0%} of the best; gap_opens_at: the smallest whose val - train loss gap is wider "
                         f"than the smallest model's by more than {LOSS_GAP:.0%} of its val loss"))}
    fig = plot_capacity(points, metric, marks)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(path / "capacity.png", buf.getvalue())
    atomic_write_json(path / "sweep.json", sweep)
    atomic_write_text(path / "report.html", render_sweep_report(sweep, path, fig))
    return sweep


def fit_scaling_law(points: list[dict]) -> Optional[dict]:
    """L(N) = a * N^(-alpha) + c of val loss against parameters N, least squares (scipy's curve_fit,
    the form scaling-law papers fit); None with fewer than 4 sizes (3 unknowns need a 4th to judge)."""
    sizes = [(p["params"], p["val"]) for p in points if p["val"] is not None]
    if len({n for n, _ in sizes}) < 4:
        return None
    from scipy.optimize import curve_fit
    n = np.array([float(x) for x, _ in sizes])
    loss = np.array([y for _, y in sizes])
    scale = n.min()  # N / N_min keeps the power's base near 1: a well-conditioned fit

    def law(x, a, alpha, c):
        return a * (x / scale) ** (-alpha) + c

    try:
        (a, alpha, c), _ = curve_fit(law, n, loss, p0=(loss.max() - loss.min() + 1e-3, 0.3, loss.min() * 0.9),
                                     bounds=([0.0, 0.0, 0.0], [np.inf, 5.0, np.inf]), maxfev=20000)
    except (RuntimeError, ValueError) as err:  # no convergence: say so instead of drawing a wrong curve
        return {"error": str(err)}
    residual = loss - law(n, a, alpha, c)
    return {"formula": "val_loss = a * (N / N_min)^(-alpha) + c", "a": float(a), "alpha": float(alpha),
            "c": float(c), "N_min": float(scale), "rms_residual": float(np.sqrt(np.mean(residual ** 2)))}


def _capacity_marks(points: list[dict], metric: str) -> dict:
    """best / saturates_at / gap_opens_at as {depth, width, params} (None when not reached); adds each
    point's generalisation gap (train − val accuracy, or val − train loss). `points` sorted by size."""
    ref = lambda p: {"depth": p["depth"], "width": p["width"], "params": p["params"]} if p else None  # noqa: E731
    acc = metric == "accuracy"
    for p in points:
        p["gap"] = None if p["val"] is None else (p["train"] - p["val"] if acc else p["val"] - p["train"])
    with_val = [p for p in points if p["val"] is not None and math.isfinite(p["val"])]
    if not with_val:
        return {"best": None, "saturates_at": None, "gap_opens_at": None}
    best = (max if acc else min)(with_val, key=lambda p: p["val"])
    if acc:
        saturated = next(p for p in with_val if p["val"] >= best["val"] - ACC_TOL)
        widened = lambda p: p["gap"] - with_val[0]["gap"] > ACC_GAP  # noqa: E731
    else:
        saturated = next(p for p in with_val if p["val"] <= best["val"] * (1 + LOSS_TOL))
        widened = lambda p: p["gap"] - with_val[0]["gap"] > LOSS_GAP * abs(p["val"])  # noqa: E731
    gap = next((p for p in with_val if widened(p)), None)
    return {"best": ref(best), "saturates_at": ref(saturated), "gap_opens_at": ref(gap)}


def plot_capacity(points: list[dict], metric: str, marks: dict):
    """Parameters (log x) against final train (dashed) and val (solid) metric, one colour per depth,
    each point labelled with its width; the saturation and gap-opening models marked."""
    from .report import new_figure

    fig, ax = new_figure((6.0, 4.2))
    depths = sorted({p["depth"] for p in points})
    for i, d in enumerate(depths):
        ps = [p for p in points if p["depth"] == d]
        x = [p["params"] for p in ps]
        colour = f"C{i % 10}"
        name = "linear" if d == 0 else f"depth {d}"
        ax.plot(x, [p["train"] for p in ps], "o--", color=colour, markersize=4, linewidth=1, label=f"{name} train")
        ax.plot(x, [p["val"] for p in ps], "s-", color=colour, markersize=5, linewidth=1.6, label=f"{name} val")
        for p in ps:
            if p["val"] is not None and d > 0:
                ax.annotate(str(p["width"]), (p["params"], p["val"]), textcoords="offset points", xytext=(3, -10),
                            fontsize=7, color=colour)
    if marks.get("saturates_at"):
        ax.axvline(marks["saturates_at"]["params"], color="tab:green", linestyle=":", linewidth=1.2,
                   label="val saturates")
    if marks.get("gap_opens_at"):
        ax.axvline(marks["gap_opens_at"]["params"], color="tab:red", linestyle="--", linewidth=1.2,
                   label="gap opens")
    fit = marks.get("fit")
    if fit and "alpha" in fit:
        n = np.geomspace(min(p["params"] for p in points), max(p["params"] for p in points), 100)
        ax.plot(n, fit["a"] * (n / fit["N_min"]) ** (-fit["alpha"]) + fit["c"], color="black", linewidth=1,
                label=f"fit: {fit['a']:.3g}·(N/N_min)^-{fit['alpha']:.3g} + {fit['c']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(metric)
    ax.set_title(f"capacity: final {metric} against model size", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return fig


def render_sweep_report(sweep: dict, path: Path, fig) -> str:
    from .report import escape, html_image, html_note, html_page, html_section, html_table

    metric = sweep["metric"]
    rows = [[f"{p['depth']} × {p['width']}" if p["depth"] else "linear", p["params"], p["train"], p["val"],
             p.get("gap"), p["test"]] for p in sweep["points"]]
    table = html_table(["hidden (depth × width)", "parameters", f"train {metric}", f"val {metric}", "gap",
                        f"test {metric}"], rows)

    marks = html_table(["", "model"], [("best val", _where(sweep["best"])),
                                       ("val saturates at", _where(sweep["saturates_at"])),
                                       ("gap opens at", _where(sweep["gap_opens_at"]))]
                       + ([("scaling fit", f"val loss = {fit['a']:.4g} · (N / {fit['N_min']:.0f})^-{fit['alpha']:.4g}"
                                           f" + {fit['c']:.4g}, rms residual {fit['rms_residual']:.2g}")]
                          if (fit := sweep.get("fit")) and "alpha" in fit else []))
    body = html_image(fig, "capacity curve") + marks + html_note(sweep["rule"] + ".")
    sections = [html_section("capacity", "Capacity curve", body)]
    sections.append(html_section("table", "Models", f"<div class='wide'>{table}</div>"))
    dirs = "".join(f"<li>{escape(p['run_dir'])}</li>" for p in sweep["points"])
    sections.append(html_section("runs", "Runs", f"<ul>{dirs}</ul>"))
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else ""
    sections.append(html_section("config", "Base config", f"<pre>{escape(config_text)}</pre>"))
    return html_page(f"trainlab sweep-size: {path.name}", escape(str(path)), sections)


def _where(mark: Optional[dict]) -> str:
    return "not reached" if not mark else f"depth {mark['depth']} width {mark['width']} ({mark['params']} parameters)"


def format_sweep(sweep: dict) -> str:
    metric = sweep["metric"]
    lines = [f"{'depth':>5} {'width':>6} {'params':>10} {'train ' + metric:>16} {'val ' + metric:>16}"]
    for p in sweep["points"]:
        val = "–" if p["val"] is None else f"{p['val']:.4f}"
        lines.append(f"{p['depth']:>5} {p['width']:>6} {p['params']:>10} {p['train']:>16.4f} {val:>16}")
    for key, label in (("saturates_at", "val saturates at"), ("gap_opens_at", "gap opens at")):
        lines.append(f"{label}: {_where(sweep[key])}")
    fit = sweep.get("fit")
    if fit and "alpha" in fit:
        lines.append(f"fit: val loss = {fit['a']:.4g} * (N / {fit['N_min']:.0f})^-{fit['alpha']:.4g} + {fit['c']:.4g} "
                     f"(rms residual {fit['rms_residual']:.2g})")
    lines.append(f"report: {sweep['report']}")
    return "\n".join(lines)
