"""Table runs (CSV, scikit-learn sets): per-feature attributions beside scikit-learn's permutation importance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import losses
from ..evaluate import TrainedRun
from .attribute import attribute, output_index, outputs, target_outputs

PERMUTATION_REPEATS = 10  # shuffles per feature: the importance is their mean, its spread their std
MAX_FEATURES_SHOWN = 30   # bars in the figure (the largest mean |attribution| first); the npz has all


def feature_names(trained: TrainedRun) -> list[str]:
    """One name per model input column: scikit-learn's feature names, or the CSV header's feature
    columns with each text column's one-hot columns named "column=value" (as data.tabular encodes)."""
    cfg, width = trained.cfg, trained.splits.input_shape[0]
    names: list[str] = []
    if cfg.data.name == "csv":
        from sklearn.preprocessing import OneHotEncoder

        from ..data import tabular
        path = Path(cfg.data.path).expanduser()
        header, rows = tabular._read_rows(path)
        lines = [line for line, _ in rows]
        target = cfg.data.target or header[-1]
        for j, h in enumerate(header):
            if h == target:
                continue
            cells = [c[j] for _, c in rows]
            if tabular._numeric_column(path, h, cells, lines) is not None:
                names.append(h)
            else:  # the same encoder load_csv fits, on the same whole column: the same column order
                enc = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(
                    np.asarray(cells, dtype=object)[:, None])
                names += [f"{h}={v}" for v in enc.categories_[0]]
    else:
        import sklearn.datasets
        loader = getattr(sklearn.datasets, f"load_{cfg.data.name}", None)
        names = [str(n) for n in loader().feature_names] if loader else []
    return names if len(names) == width else [f"x{i}" for i in range(width)]


class _Fitted:
    """A trained model seen as a fitted scikit-learn estimator: what permutation_importance calls.

    `fit` exists because permutation_importance checks for it; the model is trained already.
    """

    def __init__(self, trained: TrainedRun):
        self.trained = trained

    def fit(self, x, y):
        return self

    def _out(self, x: np.ndarray) -> np.ndarray:
        t = self.trained
        xt = torch.as_tensor(np.asarray(x), dtype=t.dtype, device=t.device)
        return losses.predictions(outputs(t.model, xt), t.loss_name, t.splits.task).numpy()

    def predict_proba(self, x) -> np.ndarray:
        return self._out(x)                               # (n, K) class probabilities

    def predict(self, x) -> np.ndarray:
        s = self.trained.splits
        if s.task == "classification":
            return self._out(x).argmax(1)
        return self._out(x) * s.extra["target_std"] + s.extra["target_mean"]  # target units


def _score(estimator: _Fitted, x, y) -> float:
    """Higher is better: minus the log loss for classification (every change of a probability
    counts, not only the flips of the argmax that accuracy sees), R² for regression.

    The log loss is sklearn.metrics.log_loss's value (probabilities clipped at float64's epsilon)
    written out: its input checks cost 6 ms a call, and permutation_importance calls it F x 10 times.
    """
    from sklearn.metrics import r2_score

    if estimator.trained.splits.task == "classification":
        p = estimator.predict_proba(x)[np.arange(len(y)), np.asarray(y, dtype=np.int64)]   # (n,) p(true class)
        return float(np.log(np.clip(p, np.finfo(np.float64).eps, 1.0)).mean())
    return r2_score(y, estimator.predict(x))


def explain_table(trained: TrainedRun, split: str, method: str, examples: int, steps: int) -> dict:
    """attributions.npz's arrays for a table run (see trainlab.explain's docstring)."""
    from sklearn.inspection import permutation_importance

    t, s = trained, getattr(trained.splits, split)
    n = len(s) if t.cfg.eval.limit is None else min(t.cfg.eval.limit, len(s))
    x = s.x[:n].to(t.device, t.dtype)                     # (n, F) standardised features
    y = s.y[:n].numpy()
    out = outputs(t.model, x)                              # (n, K) logits, or (n, 1) for regression
    regression = t.splits.task == "regression"
    predicted = losses.predicted_labels(out, t.loss_name)  # (n,) classes (unused for regression)
    target = output_index(predicted, out.shape[1])
    zero = torch.zeros((1, x.shape[1]), dtype=t.dtype)     # the training mean after standardising
    attr, delta = attribute(t.model, x, target, method, zero, steps)   # (n, F) signed (IG, occlusion)
    perm = permutation_importance(_Fitted(t), x.cpu().double().numpy(), y, scoring=_score,
                                  n_repeats=PERMUTATION_REPEATS, random_state=0)
    mean, scale = (np.asarray(t.splits.extra[k]) for k in ("feature_mean", "feature_scale"))
    # The rows shown signed: evenly spaced over the split (its order often follows the classes).
    rows = np.unique(np.linspace(0, n - 1, min(examples, n)).round().astype(np.int64))
    attr_np = attr.double().cpu().numpy()
    f_x = out.gather(1, target[:, None])[:, 0].numpy()                      # (n,) f(x)
    f_base = target_outputs(t.model, zero.to(t.device).expand_as(x), target)  # (n,) f(baseline)
    gap = np.full(n, np.nan) if delta is None else delta.double().cpu().numpy().reshape(n)
    if regression:  # in the target's units
        pred = (out[:, 0] * t.splits.extra["target_std"] + t.splits.extra["target_mean"]).numpy()
    else:
        pred = predicted.numpy()
    return {"features": np.asarray(feature_names(t)), "mean_abs": np.abs(attr_np).mean(0),
            "permutation_mean": perm.importances_mean, "permutation_std": perm.importances_std,
            "attributions": attr_np[rows], "values": x[rows].double().cpu().numpy() * scale + mean,
            "index": rows, "true": y[rows], "predicted": pred[rows],
            "output": f_x[rows], "baseline_output": f_base[rows], "delta": gap[rows]}


def ranking(arrays: dict) -> list[dict]:
    """Features by mean |attribution|, largest first, each with its permutation importance."""
    order = np.argsort(-arrays["mean_abs"], kind="stable")
    return [{"feature": str(arrays["features"][i]), "mean_abs_attribution": float(arrays["mean_abs"][i]),
             "permutation_importance": float(arrays["permutation_mean"][i]),
             "permutation_std": float(arrays["permutation_std"][i])} for i in order]


def plot_importance(arrays: dict, method: str):
    """Bars: mean |attribution| and permutation importance side by side, each scaled to its largest."""
    from ..report.plots import _figure

    rows = ranking(arrays)[:MAX_FEATURES_SHOWN]
    fig = _figure((6.5, 0.28 * len(rows) + 1.4))
    ax = fig.add_subplot()
    pos = np.arange(len(rows))
    a = np.array([r["mean_abs_attribution"] for r in rows])
    p = np.array([r["permutation_importance"] for r in rows])
    e = np.array([r["permutation_std"] for r in rows])
    pmax = np.abs(p).max() or 1.0
    ax.barh(pos - 0.2, a / (a.max() or 1.0), height=0.4, label=f"mean |{method}|", color="tab:blue")
    ax.barh(pos + 0.2, p / pmax, xerr=e / pmax, height=0.4, label="permutation importance", color="tab:orange",
            error_kw={"elinewidth": 0.8})
    ax.set_yticks(pos, [r["feature"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("importance (each scaled to its largest)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_examples(arrays: dict, classes, signed: bool):
    """Signed attributions of the shown rows: one row per example, one column per feature."""
    from ..report.plots import _figure

    attr, names = arrays["attributions"], [str(f) for f in arrays["features"]]
    fig = _figure((max(5.0, 0.3 * len(names) + 2.0), 0.3 * len(attr) + 2.2))
    ax = fig.add_subplot()
    top = float(np.abs(attr).max()) if attr.size else 1.0
    im = ax.imshow(attr, cmap="bwr" if signed else "Reds", vmin=-top if signed else 0, vmax=top or 1.0,
                   aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    label = (lambda v: classes[int(v)]) if classes else (lambda v: f"{float(v):.3g}")
    ax.set_yticks(range(len(attr)), [f"row {i}: {label(t)} → {label(p)}" for i, t, p in
                                     zip(arrays["index"], arrays["true"], arrays["predicted"])], fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
