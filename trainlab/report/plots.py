"""The report's plots: each takes plain data (rows, arrays, metric dicts) and returns a Figure.

Figures are built with matplotlib.figure.Figure and rendered by the Agg canvas, never through
pyplot (matplotlib's advice for servers: "Embedding in a web application server"): pyplot keeps
every figure in a global registry until plt.close, while a bare Figure is freed with its last
reference, so a report leaks nothing, is thread-safe, and leaves the user's backend alone.
matplotlib is imported when the first figure is drawn (it costs ~0.5-1 s), so the HTML helpers
and the run files load without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .runfiles import as_float, column, has_column

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100                 # 5 x 3.5 in -> 500 x 350 px: sharp on screen, ~30-60 kB per PNG
SIZE = (5.0, 3.5)         # inches, the default figure
MAX_CLASSES = 10          # ROC / PR: up to this many classes get one curve each ...
FEW_CLASSES = 5           # ... above it, the macro average and the lowest-scoring few
ANNOTATE_MAX = 20         # confusion matrix: counts written in the cells up to this many classes
WRONG_MAX = 25            # most confidently wrong examples shown (a 5 x 5 grid)
GRID = np.linspace(0.0, 1.0, 201)  # common x axis for macro-averaged ROC / PR curves


def _figure(size: tuple[float, float], layout: Optional[str] = "constrained") -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)  # the Agg canvas renders it; no pyplot, no global registry
    return fig


def new_figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Any]:
    fig = _figure(size)
    return fig, fig.add_subplot()


def x_axis(rows: list[dict]) -> tuple[np.ndarray, str]:
    """(x values, axis label) of a run's rows: epochs, or the optimiser step of each evaluation for
    a step budget (train.steps, whose rows' epochs are evaluation periods and which count the tokens
    or examples seen)."""
    if rows and ("tokens" in rows[0] or "examples" in rows[0]) and has_column(rows, "step"):
        return column(rows, "step"), "optimiser step"
    return column(rows, "epoch"), "epoch"


def _at_epoch(rows: list[dict], epoch: Optional[int]) -> Optional[int]:
    """The index of row `epoch` (as summary.json's best_epoch counts), or None."""
    epochs = [r.get("epoch") for r in rows]
    return epochs.index(epoch) if epoch is not None and epoch in epochs else None


def plot_learning_curves(rows: list[dict], best_epoch: Optional[int] = None, metric: str = "loss") -> Figure:
    """train_<metric> and val_<metric> per epoch (per evaluation step for a step budget), the best
    epoch marked by a dotted line.

    >>> fig = plot_learning_curves(run.rows, run.best_epoch, "accuracy")
    """
    fig, ax = new_figure()
    epochs, xlabel = x_axis(rows)
    marker = "o" if len(rows) <= 30 else None  # a few epochs read better as points
    for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
        y = column(rows, f"{split}_{metric}")
        if np.isfinite(y).any():
            ax.plot(epochs, y, marker=marker, markersize=3, color=colour,
                    label="train" if split == "train" else "validation")
    best = _at_epoch(rows, best_epoch)
    if best is not None:
        where = f"epoch {best_epoch}" if xlabel == "epoch" else f"step {int(epochs[best])}"
        ax.axvline(epochs[best], color="tab:green", linestyle=":", label=f"best {where}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: train vs validation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_learning_rate(rows: list[dict]) -> Figure:
    """The learning rate at the end of each epoch (log axis when it spans more than 10x)."""
    fig, ax = new_figure()
    lr = column(rows, "lr")
    x, xlabel = x_axis(rows)
    ax.plot(x, lr, marker="o" if len(rows) <= 30 else None, markersize=3)
    finite = lr[np.isfinite(lr)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    return fig


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Figure:
    """Heat map of the (K, K) confusion matrix normalised per true class (rows sum to 1), with the
    counts written in the cells (up to ANNOTATE_MAX classes)."""
    cm = np.asarray(matrix, dtype=float)
    k = len(cm)
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)  # absent class: a 0 row
    side = min(max(4.5, 0.45 * k + 1.5), 12.0)
    fig, ax = new_figure((side + 0.8, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(k) if k <= 40 else np.arange(0, k, max(1, k // 20))
    labels = [str(classes[i]) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90 if max(map(len, labels), default=0) > 3 else 0, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= ANNOTATE_MAX:
        size = 8 if k <= 10 else 6
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=size,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_title("confusion matrix (colour: row fraction, text: count)", fontsize=9)
    else:
        ax.set_title(f"confusion matrix, {k} classes (colour: row fraction)", fontsize=9)
    return fig


def shown_classes(scores: dict[str, Optional[float]], max_classes: int = MAX_CLASSES,
                  few: int = FEW_CLASSES) -> tuple[list[str], str]:
    """Which classes get a curve: all of them up to max_classes, else the `few` lowest-scoring
    (the ones worth a look); returns (names, a note saying which)."""
    defined = [c for c, s in scores.items() if s is not None]
    if len(defined) <= max_classes:
        return defined, ""
    worst = sorted(defined, key=lambda c: scores[c])[:few]
    return worst, f"the macro average and the {few} lowest of {len(defined)} classes"


def _macro_average(curves: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Mean of curves (x ascending) interpolated onto GRID."""
    return np.mean([np.interp(GRID, x, y) for x, y in curves], axis=0)


def plot_roc_curves(roc: dict[str, Optional[dict]], max_classes: int = MAX_CLASSES) -> Figure:
    """One-vs-rest ROC curve per class with its AUC in the legend, plus the macro average; with more
    than max_classes classes, the macro average and the few lowest-AUC classes only.

    ``roc``: classification_metrics(...)["curves"]["roc"] ({class: {fpr, tpr, auc} or None}).
    """
    fig, ax = new_figure((5.0, 4.0))
    valid = {c: v for c, v in roc.items() if v}
    names, note = shown_classes({c: v.get("auc") for c, v in valid.items()}, max_classes)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
    if len(valid) >= 2:
        mean_tpr = _macro_average([(np.asarray(v["fpr"], float), np.asarray(v["tpr"], float))
                                   for v in valid.values()])
        aucs = [v["auc"] for v in valid.values() if v.get("auc") is not None]
        ax.plot(GRID, mean_tpr, color="black", linewidth=2,
                label=f"macro average (AUC {np.mean(aucs):.3f})" if aucs else "macro average")
    for c in names:
        v = valid[c]
        auc = f" (AUC {v['auc']:.3f})" if v.get("auc") is not None else ""
        ax.plot(v["fpr"], v["tpr"], linewidth=1, label=f"{c}{auc}")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one vs rest" + (f": {note}" if note else ""), fontsize=9)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    return fig


def plot_pr_curves(pr: dict[str, Optional[dict]], max_classes: int = MAX_CLASSES) -> Figure:
    """Precision-recall curve per class with its average precision (AP) in the legend, plus the macro
    average of the interpolated precision; many classes: as plot_roc_curves.

    ``pr``: classification_metrics(...)["curves"]["pr"] ({class: {precision, recall, average_precision}}).
    """
    fig, ax = new_figure((5.0, 4.0))
    valid = {c: v for c, v in pr.items() if v}
    names, note = shown_classes({c: v.get("average_precision") for c, v in valid.items()}, max_classes)
    if len(valid) >= 2:
        interp = []
        for v in valid.values():
            rec, prec = np.asarray(v["recall"], float), np.asarray(v["precision"], float)
            order = np.argsort(rec, kind="stable")
            rec, prec = rec[order], prec[order]
            # interpolated precision: the best precision at this recall or higher (PASCAL VOC rule)
            interp.append((rec, np.maximum.accumulate(prec[::-1])[::-1]))
        aps = [v["average_precision"] for v in valid.values() if v.get("average_precision") is not None]
        ax.plot(GRID, _macro_average(interp), color="black", linewidth=2,
                label=f"macro average (mean AP {np.mean(aps):.3f})" if aps else "macro average")
    for c in names:
        v = valid[c]
        ap = f" (AP {v['average_precision']:.3f})" if v.get("average_precision") is not None else ""
        ax.plot(v["recall"], v["precision"], linewidth=1, drawstyle="steps-post", label=f"{c}{ap}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall" + (f": {note}" if note else ""), fontsize=9)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return fig


def plot_reliability(bins: list[dict], ece: Optional[float] = None) -> Figure:
    """Reliability diagram: accuracy vs mean confidence per confidence bin (the diagonal is perfect
    calibration), with the examples per bin below and the ECE in the title.

    ``bins``: classification_metrics(...)["curves"]["reliability"].
    """
    fig = _figure((5.0, 4.5))
    ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lower = np.array([b["lower"] for b in bins], float)
    width = np.array([b["upper"] for b in bins], float) - lower
    acc = np.array([as_float(b.get("accuracy")) for b in bins])
    conf = np.array([as_float(b.get("confidence")) for b in bins])
    count = np.array([b.get("count") or 0 for b in bins], float)
    filled = count > 0
    ax.bar(lower[filled], acc[filled], width=width[filled], align="edge", color="tab:blue",
           edgecolor="white", label="accuracy")
    # The gap from accuracy to mean confidence, hatched and unfilled so it reads the same above the
    # bar (over-confident) and inside it (under-confident).
    ax.bar(lower[filled], np.abs(conf[filled] - acc[filled]), bottom=np.minimum(acc[filled], conf[filled]),
           width=width[filled], align="edge", facecolor="none", edgecolor="tab:red", hatch="///",
           linewidth=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability (ECE {ece:.4f})" if ece is not None else "reliability", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    axn.bar(lower, count, width=width, align="edge", color="grey", edgecolor="white")
    axn.set_xlabel("confidence (top-class probability)")
    axn.set_ylabel("examples")
    axn.set_xlim(0, 1)
    return fig


def _as_display_image(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) in 0..1 for imshow."""
    x = (np.asarray(img, dtype=float) - lo) / (hi - lo if hi > lo else 1.0)
    x = np.clip(x, 0.0, 1.0)
    return x[0] if x.shape[0] == 1 else np.transpose(x[:3], (1, 2, 0))


def plot_wrong_examples(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                        classes: Optional[Sequence[str]] = None, max_images: int = WRONG_MAX) -> Figure:
    """Grid of the most confidently wrong examples, most confident first, each captioned
    true / predicted (confidence). ``images``: (N, C, H, W), uint8 (0..255) or float."""
    images = np.asarray(images)
    order = np.argsort(-np.asarray(confidence, float), kind="stable")[:max_images]
    n = len(order)
    cols = min(10, max(1, math.ceil(math.sqrt(n))))  # square-ish: 25 -> 5 x 5
    rows = max(1, math.ceil(n / cols))
    cell_w, img_h, title_h = 1.15, 1.05, 0.4  # inches: each image with a two-line caption above it
    height = rows * (img_h + title_h) + 0.05
    fig = _figure((cell_w * cols, height), layout=None)  # fixed spacing: a constrained layout of 24 axes costs seconds
    if images.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:  # float pixels of unknown range (digits: 0..16): one scale for all, so contrast compares
        lo, hi = (float(images[order].min()), float(images[order].max())) if n else (0.0, 1.0)
    name = (lambda i: str(classes[int(i)]) if classes is not None and 0 <= int(i) < len(classes) else str(int(i)))
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw={
        "left": 0.01, "right": 0.99, "bottom": 0.05 / height, "top": 1 - title_h / height,
        "wspace": 0.12, "hspace": title_h / img_h}).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, order):
        ax.imshow(_as_display_image(images[i], lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"true {name(true[i])}\npred {name(predicted[i])} ({float(confidence[i]):.2f})", fontsize=7)
    return fig


def plot_predicted_vs_true(true: np.ndarray, predicted: np.ndarray) -> Figure:
    """Regression: predicted against true values; the diagonal is a perfect prediction."""
    fig, ax = new_figure((4.5, 4.2))
    true, predicted = np.asarray(true, float), np.asarray(predicted, float)
    ax.scatter(true, predicted, s=8, alpha=0.6)
    finite = np.concatenate([true, predicted])
    finite = finite[np.isfinite(finite)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("predicted vs true")
    ax.grid(alpha=0.3)
    return fig


def plot_comparison(runs: dict[str, list[dict]], metric: str = "loss",
                    best_epochs: Optional[dict[str, Optional[int]]] = None) -> Figure:
    """Several runs' curves overlaid, one colour per run: validation solid, train dashed (a metric
    without train_/val_ columns, such as lr, is one solid line). ``runs``: {run name: rows}."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    fig, ax = new_figure((5.4, 3.8))
    palette = ([f"C{i}" for i in range(10)] if len(runs) <= 10
               else [tuple(c) for c in colormaps["tab20"](np.linspace(0, 1, len(runs)))])
    split_metric = any(has_column(rows, f"val_{metric}") or has_column(rows, f"train_{metric}")
                       for rows in runs.values())
    handles = []
    xlabel = "epoch"
    for (name, rows), colour in zip(runs.items(), palette):
        epochs, xlabel = x_axis(rows)
        if split_metric:
            ax.plot(epochs, column(rows, f"train_{metric}"), color=colour, linestyle="--", linewidth=1)
            val = column(rows, f"val_{metric}")
            ax.plot(epochs, val, color=colour, linewidth=1.5)
            best = _at_epoch(rows, (best_epochs or {}).get(name))
            if best is not None:
                ax.plot([epochs[best]], [val[best]], "o", color=colour, markersize=5)
        else:
            ax.plot(epochs, column(rows, metric), color=colour, linewidth=1.5)
        handles.append(Line2D([], [], color=colour, label=name))
    if split_metric:
        handles += [Line2D([], [], color="black", label="validation"),
                    Line2D([], [], color="black", linestyle="--", label="train")]
        if best_epochs:
            handles.append(Line2D([], [], color="black", marker="o", linestyle="", label="best epoch"))
    if metric == "lr":
        lr = np.concatenate([column(r, "lr") for r in runs.values()]) if runs else np.array([])
        lr = lr[np.isfinite(lr)]
        if len(lr) and lr.min() > 0 and lr.max() / lr.min() > 10:
            ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}, {len(runs)} runs")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig
