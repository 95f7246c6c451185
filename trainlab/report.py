"""Plots and one self-contained HTML page from a run directory's saved files; never trains.

    write_report("runs/seed_mlp-20261128-171500")            # -> RUN/report.html
    write_comparison(["runs/a", "runs/b"], Path("cmp.html"))  # curves overlaid, metrics side by side

Reads only files: config.yaml, metrics.jsonl, summary.json and, after `trainlab evaluate`,
eval/metrics.json, eval/curves.json, eval/predictions.csv, eval/diagnosis.json and
eval/wrong_examples.npz. A section whose file is missing is replaced by a one-line note, so a
run that was only trained still gets a page (its diagnosis is then computed from metrics.jsonl).

The page has no scripts and loads nothing: the figures are PNGs embedded as base64 data URIs, the
CSS is inline, the fonts are the viewer's own. Every plot function takes plain data (rows, arrays,
the dicts of trainlab.metrics) and returns a matplotlib Figure, so other commands can reuse them.

Figures are built with matplotlib.figure.Figure and rendered by the Agg canvas, never through
pyplot (matplotlib's advice for servers: "Embedding in a web application server"): pyplot keeps
every figure in a global registry until plt.close, while a bare Figure is freed with its last
reference, so a report leaks nothing, is thread-safe, and leaves the user's backend alone.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import ConfigError
from .runs import atomic_write_text

DPI = 100                 # 5 x 3.5 in -> 500 x 350 px: sharp on screen, ~30-60 kB per PNG
SIZE = (5.0, 3.5)         # inches, the default figure
MAX_CLASSES = 10          # ROC / PR: up to this many classes get one curve each ...
FEW_CLASSES = 5           # ... above it, the macro average and the lowest-scoring few
ANNOTATE_MAX = 20         # confusion matrix: counts written in the cells up to this many classes
WRONG_MAX = 25            # most confidently wrong examples shown (a 5 x 5 grid)
GRID = np.linspace(0.0, 1.0, 201)  # common x axis for macro-averaged ROC / PR curves


# ---------------------------------------------------------------- reading a run


@dataclass
class RunFiles:
    """What a run directory holds, each part None (or empty) when its file is missing."""

    path: Path
    config_text: Optional[str] = None
    config: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)        # metrics.jsonl, one dict per epoch
    summary: Optional[dict] = None
    eval: Optional[dict] = None                            # eval/metrics.json
    curves: Optional[dict] = None                          # eval/curves.json {roc, pr, reliability}
    diagnosis: Optional[list[dict]] = None                 # eval/diagnosis.json
    wrong: Optional[dict] = None                           # eval/wrong_examples.npz arrays
    predictions: Optional[Path] = None                     # eval/predictions.csv
    problems: list[str] = field(default_factory=list)      # files present but unreadable

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_epoch(self) -> Optional[int]:
        return (self.summary or {}).get("best_epoch")

    @property
    def classes(self) -> Optional[list[str]]:
        return (self.eval or {}).get("classes")


def load_run(run_dir: str | Path) -> RunFiles:
    """Read every file of a run that exists; a folder with neither config.yaml nor metrics.jsonl
    is not a run (ConfigError, exit 2). A file that exists but does not parse is noted, not fatal."""
    import yaml

    path = Path(run_dir)
    run = RunFiles(path)
    if not path.is_dir() or not ((path / "config.yaml").is_file() or (path / "metrics.jsonl").is_file()):
        raise ConfigError(f"'{path}' is not a run directory: it has no config.yaml or metrics.jsonl. "
                          "Give a folder that `trainlab train` wrote.")

    def attempt(name: str, read):
        file = path / name
        if not file.is_file():
            return None
        try:
            return read(file)
        except Exception as err:  # a report shows what it can; the note names the bad file
            run.problems.append(f"{name}: {type(err).__name__}: {err}")
            return None

    run.config_text = attempt("config.yaml", lambda f: f.read_text())
    if run.config_text is not None:
        run.config = attempt("config.yaml", lambda f: yaml.safe_load(run.config_text) or {}) or {}
    run.rows = attempt("metrics.jsonl", lambda f: [json.loads(line) for line in f.read_text().splitlines()
                                                   if line.strip()]) or []
    run.summary = attempt("summary.json", lambda f: json.loads(f.read_text()))
    run.eval = attempt("eval/metrics.json", lambda f: json.loads(f.read_text()))
    run.curves = attempt("eval/curves.json", lambda f: json.loads(f.read_text()))
    run.diagnosis = attempt("eval/diagnosis.json", lambda f: json.loads(f.read_text()))
    run.wrong = attempt("eval/wrong_examples.npz", _read_npz)
    if (path / "eval" / "predictions.csv").is_file():
        run.predictions = path / "eval" / "predictions.csv"
    return run


def _read_npz(file: Path) -> dict:
    with np.load(file, allow_pickle=False) as z:  # never unpickle: plain arrays only
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- plots (each returns a Figure)


def new_figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas renders it; no pyplot, no global registry
    return fig, fig.add_subplot()


def _column(rows: list[dict], key: str) -> np.ndarray:
    """A metrics.jsonl column as floats; None (a NaN written as null) and missing become NaN."""
    return np.array([_float(r.get(key)) for r in rows], dtype=float)


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _has(rows: list[dict], key: str) -> bool:
    return bool(np.isfinite(_column(rows, key)).any()) if rows else False


def curve_metrics(rows: list[dict]) -> list[str]:
    """The metrics a run's curves hold, in plotting order: loss, then accuracy or rmse."""
    out = ["loss"] if _has(rows, "train_loss") or _has(rows, "val_loss") else []
    for metric in ("accuracy", "rmse"):
        if _has(rows, f"train_{metric}") or _has(rows, f"val_{metric}"):
            out.append(metric)
            break
    return out


def plot_learning_curves(rows: list[dict], best_epoch: Optional[int] = None, metric: str = "loss") -> Figure:
    """train_<metric> and val_<metric> per epoch, the best epoch marked by a dotted line.

    >>> fig = plot_learning_curves(run.rows, run.best_epoch, "accuracy")
    """
    fig, ax = new_figure()
    epochs = _column(rows, "epoch")
    marker = "o" if len(rows) <= 30 else None  # a few epochs read better as points
    for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
        y = _column(rows, f"{split}_{metric}")
        if np.isfinite(y).any():
            ax.plot(epochs, y, marker=marker, markersize=3, color=colour,
                    label="train" if split == "train" else "validation")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="tab:green", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: train vs validation")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_learning_rate(rows: list[dict]) -> Figure:
    """The learning rate at the end of each epoch (log axis when it spans more than 10x)."""
    fig, ax = new_figure()
    lr = _column(rows, "lr")
    ax.plot(_column(rows, "epoch"), lr, marker="o" if len(rows) <= 30 else None, markersize=3)
    finite = lr[np.isfinite(lr)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
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
    fig = Figure(figsize=(5.0, 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lower = np.array([b["lower"] for b in bins], float)
    width = np.array([b["upper"] for b in bins], float) - lower
    acc = np.array([_float(b.get("accuracy")) for b in bins])
    conf = np.array([_float(b.get("confidence")) for b in bins])
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
    fig = Figure(figsize=(cell_w * cols, height), dpi=DPI)  # fixed spacing: a constrained layout of
    FigureCanvasAgg(fig)                                     # 24 axes costs seconds
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
    fig, ax = new_figure((5.4, 3.8))
    palette = ([f"C{i}" for i in range(10)] if len(runs) <= 10
               else [tuple(c) for c in colormaps["tab20"](np.linspace(0, 1, len(runs)))])
    split_metric = any(_has(rows, f"val_{metric}") or _has(rows, f"train_{metric}") for rows in runs.values())
    handles = []
    for (name, rows), colour in zip(runs.items(), palette):
        epochs = _column(rows, "epoch")
        if split_metric:
            ax.plot(epochs, _column(rows, f"train_{metric}"), color=colour, linestyle="--", linewidth=1)
            val = _column(rows, f"val_{metric}")
            ax.plot(epochs, val, color=colour, linewidth=1.5)
            best = (best_epochs or {}).get(name)
            if best is not None and best in epochs:
                ax.plot([best], [val[list(epochs).index(best)]], "o", color=colour, markersize=5)
        else:
            ax.plot(epochs, _column(rows, metric), color=colour, linewidth=1.5)
        handles.append(Line2D([], [], color=colour, label=name))
    if split_metric:
        handles += [Line2D([], [], color="black", label="validation"),
                    Line2D([], [], color="black", linestyle="--", label="train")]
        if best_epochs:
            handles.append(Line2D([], [], color="black", marker="o", linestyle="", label="best epoch"))
    if metric == "lr":
        lr = np.concatenate([_column(r, "lr") for r in runs.values()]) if runs else np.array([])
        lr = lr[np.isfinite(lr)]
        if len(lr) and lr.min() > 0 and lr.max() / lr.min() > 10:
            ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}, {len(runs)} runs")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


# ---------------------------------------------------------------- HTML pieces


def png_data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG data URI (the figure is cleared afterwards, freeing its artists)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def html_image(fig: Figure, alt: str) -> str:
    return f'<figure><img src="{png_data_uri(fig)}" alt="{html.escape(alt)}"></figure>'


def escape(value: Any) -> str:
    return html.escape(str(value))


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    return escape(v)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], first_col_text: bool = True) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join((f"<th scope='row'>{escape(c)}</th>" if i == 0 and first_col_text else f"<td>{_num(c)}</td>")
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_note(text: str, code: str = "", after: str = "") -> str:
    """A short italic note; `code` (a command) is set in <code> between `text` and `after`."""
    cmd = f"<code>{escape(code)}</code>" if code else ""
    return f'<p class="note">{escape(text)}{cmd}{escape(after)}</p>'


def _missing(run: RunFiles, file: str) -> str:
    return html_note(f"No {file} yet: run ", f"trainlab evaluate {run.path}", " first.")


def html_section(anchor: str, title: str, body: str, css: str = "") -> tuple[str, str, str]:
    cls = f' class="{css}"' if css else ""
    return anchor, title, f'<section id="{anchor}"{cls}><h2>{escape(title)}</h2>{body}</section>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1200px;padding:1em 2em;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}nav{font-size:.9em;margin:.6em 0}nav a{margin-right:1em;color:#1f5fa8;text-decoration:none}
.meta{color:#555;font-size:.9em}.note{color:#777;font-style:italic}
section.side{display:inline-block;vertical-align:top;margin-right:1.5em;max-width:100%}
.figs{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}figure{margin:0}
img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f6f6f6}
th[scope=row]{text-align:left;font-weight:normal;background:#fafafa}
.wide{overflow-x:auto;max-width:100%}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em;border:1px solid #eee}
code{background:#f0f2f4;padding:.05em .35em;border-radius:3px;font-size:.9em}
ul.findings{padding-left:1.2em}ul.findings li{margin-bottom:.6em}
.kind{font-weight:bold;display:inline-block;min-width:7em}
.k-healthy,.k-best_epoch{color:#2a7a2a}.k-overfitting,.k-underfitting,.k-lr_too_high,.k-lr_too_low,
.k-instability{color:#b35c00}.k-divergence{color:#b00020}
"""


def html_page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    body = "\n".join(s for _, _, s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class='meta'>{subtitle}</p><nav>{nav}</nav>\n{body}\n</body></html>\n")


HEADLINE = ("accuracy", "balanced_accuracy", "top5_accuracy", "f1_macro", "precision_macro", "recall_macro",
            "roc_auc", "roc_auc_ovr_weighted", "average_precision_macro", "log_loss", "ece",
            "rmse", "mae", "r2", "mse")


def _headline_section(run: RunFiles) -> tuple[str, str, str]:
    parts = []
    if run.eval:
        ev = run.eval
        keys = [k for k in HEADLINE if k in ev] + sorted(k for k in ev if k.startswith("top") and
                                                          k.endswith("_accuracy") and k not in HEADLINE)
        what = (f"{escape(ev.get('split', '?'))} split, {_num(ev.get('n_examples', ev.get('n_samples')))} examples, "
                f"{escape(ev.get('checkpoint', '?'))} checkpoint")
        parts.append(f"<h3>Evaluation ({what})</h3>" + html_table(["metric", "value"], [(k, ev[k]) for k in keys]))
    else:
        parts.append(html_note("Not evaluated yet: ", f"trainlab evaluate {run.path}",
                               " adds the evaluation metrics and their figures."))
    if run.summary:
        s = run.summary
        metrics = s.get("metrics") or {}
        cols = []
        for split in metrics.values():
            cols += [k for k in (split or {}) if k not in cols]
        table = html_table(["split"] + cols, [[split] + [(metrics[split] or {}).get(c) for c in cols]
                                              for split in metrics])
        info = ", ".join(f"{k.replace('_', ' ')} {_num(s.get(k))}" for k in
                         ("epochs_run", "best_epoch", "stopped_because", "seconds", "monitor", "final_checkpoint")
                         if k in s)
        parts.append(f"<h3>Training (summary.json)</h3><p class='meta'>{info}</p>{table}")
    else:
        parts.append(html_note("No summary.json: training has not finished (or was interrupted)."))
    return html_section("headline", "Headline metrics", "".join(parts))


def _diagnosis_section(run: RunFiles) -> tuple[str, str, str]:
    findings, source = run.diagnosis, "From eval/diagnosis.json"
    if findings is None and run.rows:
        from dataclasses import asdict

        from .diagnose import diagnose
        findings = [asdict(f) for f in diagnose(run.rows, run.config or None)]
        source = "Computed from metrics.jsonl (no eval/diagnosis.json yet)"
    if not findings:
        return html_section("diagnosis", "Diagnosis", html_note("No metrics.jsonl rows: nothing to diagnose."))
    items = []
    for f in findings:
        kind = str(f.get("kind", ""))
        where = f" (epoch {f['epoch']})" if f.get("epoch") is not None else ""
        remedies = " ".join(f"<code>{escape(r)}</code>" for r in f.get("remedies") or [])
        items.append(f"<li><span class='kind k-{escape(kind)}'>{escape(kind.replace('_', ' '))}{escape(where)}</span> "
                     f"{escape(f.get('message', ''))}" + (f"<br>try: {remedies}" if remedies else "") + "</li>")
    howto = (f"<p class='meta'>{escape(source)}. Paste a remedy as an override: "
             f"<code>trainlab train -c {escape(run.path / 'config.yaml')} KEY=VALUE</code></p>")
    return html_section("diagnosis", "Diagnosis", howto + f"<ul class='findings'>{''.join(items)}</ul>")


def _curves_section(run: RunFiles) -> tuple[str, str, str]:
    if not run.rows:
        return html_section("curves", "Learning curves", html_note("No metrics.jsonl rows yet."))
    figs = [html_image(plot_learning_curves(run.rows, run.best_epoch, m), f"{m} per epoch")
            for m in curve_metrics(run.rows)]
    if _has(run.rows, "lr"):
        figs.append(html_image(plot_learning_rate(run.rows), "learning rate per epoch"))
    return html_section("curves", "Learning curves", f"<div class='figs'>{''.join(figs)}</div>")


def _classification_sections(run: RunFiles) -> list[tuple[str, str, str]]:
    out = []
    ev, classes = run.eval, run.classes
    missing = _missing(run, "eval/metrics.json")
    if ev and ev.get("confusion_matrix") is not None:
        cm = ev["confusion_matrix"]
        names = classes or [str(i) for i in range(len(cm))]
        out.append(html_section("confusion", "Confusion matrix",
                                html_image(plot_confusion_matrix(cm, names), "confusion matrix")))
    else:
        out.append(html_section("confusion", "Confusion matrix", missing))

    curves = run.curves
    no_curves = _missing(run, "eval/curves.json")
    if curves and curves.get("roc"):
        _, note = shown_classes({c: (v or {}).get("auc") for c, v in curves["roc"].items() if v})
        body = (html_image(plot_roc_curves(curves["roc"]), "ROC curves")
                + (html_note(f"Showing {note}.") if note else ""))
        out.append(html_section("roc", "ROC curves", body, "side"))
    else:
        out.append(html_section("roc", "ROC curves", no_curves, "side"))
    if curves and curves.get("pr"):
        _, note = shown_classes({c: (v or {}).get("average_precision") for c, v in curves["pr"].items() if v})
        body = (html_image(plot_pr_curves(curves["pr"]), "precision-recall curves")
                + (html_note(f"Showing {note}.") if note else ""))
        out.append(html_section("pr", "Precision-recall curves", body, "side"))
    else:
        out.append(html_section("pr", "Precision-recall curves", no_curves, "side"))
    if curves and curves.get("reliability"):
        figure = plot_reliability(curves["reliability"], (ev or {}).get("ece"))
        out.append(html_section("reliability", "Calibration", html_image(figure, "reliability diagram"), "side"))
    else:
        out.append(html_section("reliability", "Calibration", no_curves, "side"))

    if ev and ev.get("per_class"):
        cols = ["precision", "recall", "f1", "support", "roc_auc", "average_precision"]
        rows = [[name] + [(m or {}).get(c) for c in cols] for name, m in ev["per_class"].items()]
        out.append(html_section("per-class", "Per-class metrics", html_table(["class"] + cols, rows)))
    else:
        out.append(html_section("per-class", "Per-class metrics", missing))

    if run.wrong is not None and len(run.wrong.get("images", [])):
        w = run.wrong
        body = html_image(plot_wrong_examples(w["images"], w["true"], w["predicted"], w["confidence"], classes),
                          "most confidently wrong examples")
        out.append(html_section("wrong", "Most confidently wrong examples",
                                html_note("Misclassified examples with the highest predicted probability, "
                                      "captioned true class, predicted class (confidence).") + body))
    elif run.wrong is not None:
        out.append(html_section("wrong", "Most confidently wrong examples", html_note("No misclassified examples.")))
    elif _is_image_run(run):
        out.append(html_section("wrong", "Most confidently wrong examples",
                                _missing(run, "eval/wrong_examples.npz")))
    return out


def _is_image_run(run: RunFiles) -> bool:
    from .data import IMAGE_SETS
    return (run.config.get("data") or {}).get("name") in IMAGE_SETS


def read_predictions(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(true, predicted) float columns of a regression predictions.csv, or None when the header has
    no recognisable pair (accepted names: true/y_true/target and predicted/y_pred/prediction)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        t = next((h for h in ("true", "y_true", "target") if h in header), None)
        p = next((h for h in ("predicted", "y_pred", "prediction", "pred") if h in header), None)
        if t is None or p is None:
            return None
        pairs = [(_float(r.get(t)), _float(r.get(p))) for r in reader]
    arr = np.array(pairs, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _regression_sections(run: RunFiles) -> list[tuple[str, str, str]]:
    pairs = None
    if run.predictions is not None:
        try:
            pairs = read_predictions(run.predictions)
        except (OSError, ValueError, csv.Error) as err:
            run.problems.append(f"eval/predictions.csv: {err}")
    if pairs is None or not len(pairs[0]):
        return [html_section("predictions", "Predictions", _missing(run, "eval/predictions.csv (true, predicted)"))]
    return [html_section("predictions", "Predictions", html_image(plot_predicted_vs_true(*pairs), "predicted vs true"))]


def _task(run: RunFiles) -> str:
    if run.eval and run.eval.get("task"):
        return run.eval["task"]
    if run.eval and "confusion_matrix" in run.eval:
        return "classification"
    return "regression" if _has(run.rows, "val_rmse") or _has(run.rows, "train_rmse") else "classification"


def _config_section(run: RunFiles) -> tuple[str, str, str]:
    if run.config_text is None:
        return html_section("config", "Resolved config", html_note("No config.yaml."))
    return html_section("config", "Resolved config", f"<pre>{escape(run.config_text)}</pre>")


def render_report(run: RunFiles) -> str:
    """The HTML of one run's report (see write_report)."""
    sections = [_headline_section(run), _diagnosis_section(run), _curves_section(run)]
    classification = _task(run) == "classification"
    if not (run.eval or run.curves or run.wrong or run.predictions or run.diagnosis):
        adds = ("the confusion matrix, ROC and precision-recall curves, calibration and per-class metrics"
                + (", and the most confidently wrong examples" if _is_image_run(run) else "")
                if classification else "the test metrics and a predicted-vs-true plot")
        hint = html_note("Not evaluated yet: ", f"trainlab evaluate {run.path}", f" adds {adds}.")
        sections.append(html_section("evaluation", "Evaluation", hint))
    else:
        sections += _classification_sections(run) if classification else _regression_sections(run)
    sections.append(_config_section(run))
    if run.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
        sections.insert(0, html_section("problems", "Unreadable files", f"<ul>{items}</ul>"))
    data = (run.config.get("data") or {}).get("name")
    model = (run.config.get("model") or {}).get("name")
    subtitle = " · ".join(escape(x) for x in (str(run.path), f"data {data}" if data else "",
                                              f"model {model}" if model else "") if x)
    return html_page(f"trainlab report: {run.name}", subtitle, sections)


def write_report(run_dir: str | Path, out: Optional[str | Path] = None) -> Path:
    """Write one run's self-contained report (default RUN/report.html, atomically); returns its path.

    >>> write_report("runs/seed_mlp-20261128-171500")
    PosixPath('runs/seed_mlp-20261128-171500/report.html')
    """
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(path, render_report(run))
    return path


# ---------------------------------------------------------------- comparison


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
        cells = "".join(f"<td><b>{_num(v)}</b></td>" if best is not None and v == best else f"<td>{_num(v)}</td>"
                        for v in values)
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
    if any(_has(r.rows, "lr") for r in runs):
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
