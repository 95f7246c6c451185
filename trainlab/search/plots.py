"""The search's figures: the metric against a parameter, a two-parameter heat map, parallel coordinates."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from .spaces import Param, fmt


def _axis_values(p: Param, values: list) -> tuple[np.ndarray, Optional[list[str]]]:
    """Numbers to plot a parameter's values at, and tick labels for a choice (its index)."""
    if p.kind == "choice":
        labels = [json.dumps(v) if not isinstance(v, str) else v for v in p.values]
        index = {json.dumps(v, sort_keys=True): i for i, v in enumerate(p.values)}
        return np.array([index.get(json.dumps(v, sort_keys=True), np.nan) for v in values], dtype=float), labels
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float), None


def plot_metric_vs_param(p: Param, rows: list[dict], metric: str, best: Optional[int]):
    """Each finished trial's value against one parameter (log axis where the range is log-spaced)."""
    from ..report import new_figure
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
    from ..report import new_figure
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
    ax.set_xticklabels([fmt(v) for v in va], fontsize=7, rotation=45)
    ax.set_yticks(range(len(vb)))
    ax.set_yticklabels([fmt(v) for v in vb], fontsize=7)
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
    from ..report import new_figure
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
            ticks.append([((v - lo) / span, fmt(10 ** v if p.log_axis else v)) for v in values])
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
