"""Several runs on one page: curves overlaid, summary metrics side by side, the config keys that differ."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from ..runs import atomic_write_text
from .html import escape, cell_text, html_image, html_note, html_page, html_section, html_table
from .page import HEADLINE, write_report
from .plots import plot_comparison
from .runfiles import RunFiles, curve_metrics, has_column, load_run


def _run_names(runs: list[RunFiles]) -> list[str]:
    """Folder names, or parent/name where two runs share a folder name."""
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.path.parent.name}/{r.name}" for r in runs]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in runs]
    return names


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


LOWER_IS_BETTER = ("loss", "log_loss", "ece", "mse", "rmse", "mae")
HIGHER_IS_BETTER = ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc",
                    "roc_auc_ovr_weighted", "average_precision_macro", "r2")


def _comparison_table(names: list[str], table: list[tuple[str, str, list]]) -> str:
    head = "<th></th>" + "".join(f"<th>{escape(n)}</th>" for n in names)
    body = []
    for label, metric, values in table:
        finite = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        best = None
        if len(finite) > 1 and (metric in LOWER_IS_BETTER or metric in HIGHER_IS_BETTER
                                or metric.startswith("top")):
            best = min(finite) if metric in LOWER_IS_BETTER else max(finite)
        cells = "".join(f"<td><b>{cell_text(v)}</b></td>" if best is not None and v == best
                        else f"<td>{cell_text(v)}</td>" for v in values)
        body.append(f"<tr><th scope='row'>{escape(label)}</th>{cells}</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def render_comparison(runs: list[RunFiles]) -> str:
    """The HTML comparing several runs (see write_comparison)."""
    names = _run_names(runs)
    by_name = dict(zip(names, runs))
    curves = {n: r.rows for n, r in by_name.items()}
    metrics = []
    for r in runs:
        metrics += [m for m in curve_metrics(r.rows) if m not in metrics]
    figs = [html_image(plot_comparison(curves, m, {n: r.best_epoch for n, r in by_name.items()}), f"{m} of every run")
            for m in metrics]
    if any(has_column(r.rows, "lr") for r in runs):
        figs.append(html_image(plot_comparison(curves, "lr"), "learning rate of every run"))
    body = f"<div class='figs'>{''.join(figs)}</div>" if figs else html_note("No run has metrics.jsonl rows.")
    sections = [html_section("curves", "Learning curves", body)]

    # Summary metrics side by side: one column per run, one row per figure; the best value in bold.
    split_keys: list[tuple[str, str]] = []
    for r in runs:
        for split, m in ((r.summary or {}).get("metrics") or {}).items():
            split_keys += [(split, k) for k in (m or {}) if (split, k) not in split_keys]
    split_keys.sort(key=lambda sk: ({"test": 0, "val": 1, "train": 2}.get(sk[0], 3), sk[1]))
    eval_keys = [k for k in HEADLINE if any(k in (r.eval or {}) for r in runs)]
    table: list[tuple[str, str, list]] = [  # (label, metric name for the better-direction, values)
        ("epochs", "", [(r.summary or {}).get("epochs_run", len(r.rows) or None) for r in runs]),
        ("best epoch", "", [(r.summary or {}).get("best_epoch") for r in runs]),
        ("stopped because", "", [(r.summary or {}).get("stopped_because") for r in runs]),
        ("seconds", "", [(r.summary or {}).get("seconds") for r in runs])]
    table += [(f"{split} {k}", k, [(((r.summary or {}).get("metrics") or {}).get(split) or {}).get(k) for r in runs])
              for split, k in split_keys]
    table += [(f"eval {k}", k, [(r.eval or {}).get(k) for r in runs]) for k in eval_keys]
    sections.append(html_section("summary", "Summary metrics", _comparison_table(names, table)))

    # The config keys that differ: what the comparison is about.
    flat = [_flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    if differ:
        body = html_table(["key"] + names, [[k] + [json.dumps(f.get(k), default=str) for f in flat] for k in differ])
    else:
        body = html_note("The runs' configs are identical (or missing).")
    sections.append(html_section("config", "Config differences", body))
    where = "".join(f"<li>{escape(n)}: {escape(r.path)}</li>" for n, r in by_name.items())
    sections.append(html_section("runs", "Runs", f"<ul>{where}</ul>"))
    return html_page(f"trainlab comparison: {len(runs)} runs", escape(", ".join(names)), sections)


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Overlay several runs' learning curves and table their metrics side by side in `out`;
    with one run, that run's full report (write_report) goes to `out`.

    >>> write_comparison(["runs/sgd", "runs/adam"], Path("runs/compare.html"))
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ConfigError("Give at least one run directory to report on.")
    if len(run_dirs) == 1:
        return write_report(run_dirs[0], out)
    runs = [load_run(d) for d in run_dirs]
    path = Path(out)
    atomic_write_text(path, render_comparison(runs))
    return path
