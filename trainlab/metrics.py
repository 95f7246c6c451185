"""Classification and regression metrics on numpy arrays, computed by scikit-learn, as JSON-ready dicts.

``classification_metrics(y_true, proba, classes)`` returns one flat-ish dict:

Scalars (float, or None where undefined):
    accuracy, balanced_accuracy        predicted label = argmax(proba), ties -> lowest index
    top{k}_accuracy                    one per k in ``top_k`` with k < K (sklearn's tie rule)
    log_loss                           labels = range(K)
    precision_{macro,micro,weighted}   precision_recall_fscore_support, labels = range(K),
    recall_{macro,micro,weighted}      zero_division = 0: a class never predicted has
    f1_{macro,micro,weighted}          precision 0, a class absent from the split recall 0
    roc_auc_ovr_macro                  one-vs-rest ROC AUC over the classes present in y_true
    roc_auc_ovr_weighted               (weights = their support); None if < 2 classes present
    roc_auc                            K == 2: AUC of proba[:, 1]; K > 2: = roc_auc_ovr_macro
    average_precision_macro            one-vs-rest average precision over the classes present
    average_precision_weighted         in y_true (weights = their support)
    ece                                top-label expected calibration error, 15 equal-width bins
    n_samples, n_classes               ints

Nested:
    per_class        {class_name: {precision, recall, f1, support, roc_auc, average_precision}}
    confusion_matrix [[int]] (K, K), rows = true label, columns = predicted label
    curves           {"roc": {class_name: {fpr, tpr, thresholds, auc}},
                      "pr": {class_name: {precision, recall, thresholds, average_precision}},
                      "reliability": [{lower, upper, count, confidence, accuracy}] * 15}

The rule for a class absent from the split: it has no positives, so its one-vs-rest ROC AUC
and average precision are undefined. It gets None there (and its curves are None) and is left
out of the macro / weighted ROC AUC and average-precision means, which are then taken over the
classes present -- exactly scikit-learn's multi-label averaging on the present columns. Its
precision/recall/F1 still count in the macro means (sklearn's rule with zero_division=0).
A class that is every sample of the split has no negatives: ROC AUC None, average precision
defined. With fewer than 2 classes present every ROC AUC is None.

JSON: every value is a Python float/int/str/list/dict/None; NaN and +-inf become None (so the
first ROC threshold, which scikit-learn sets to +inf, is None).

``regression_metrics(y_true, y_pred)`` returns {mse, rmse, mae, r2, n_samples}.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
    top_k_accuracy_score,
)

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern NNs")


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    top_k: Sequence[int] = (5,),
) -> dict:
    """All classification figures for (N,) integer labels and (N, K) class probabilities.

    >>> m = classification_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["cat", "dog"])
    >>> m["accuracy"], m["roc_auc"]
    (1.0, 1.0)
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2:
        raise ValueError(f"proba must be (N, K) class probabilities, got shape {proba.shape}")
    n, k = proba.shape
    if y_true.shape != (n,):
        raise ValueError(f"y_true must have shape ({n},) to match proba {proba.shape}, got {y_true.shape}")
    if n == 0:
        raise ValueError("no samples: y_true and proba are empty")
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names for {k} probability columns")
    if not np.issubdtype(y_true.dtype, np.integer):
        if not np.all(np.mod(y_true, 1) == 0):
            raise ValueError("y_true must hold integer class indices")
        y_true = y_true.astype(np.int64)
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true holds labels outside 0..{k - 1}")

    labels = list(range(k))
    y_pred = proba.argmax(axis=1)  # ties -> lowest index
    present = np.unique(y_true)
    out: dict = {"n_samples": n, "n_classes": k}

    # The undefined cases (a class never predicted, absent, or alone) are handled by the
    # documented rules above, so sklearn's warnings about them would only be noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(y_pred contains classes not in y_true|"
                                "No positive class found|No negative samples|No positive samples|"
                                "Only one class).*")
        out["accuracy"] = accuracy_score(y_true, y_pred)
        out["balanced_accuracy"] = balanced_accuracy_score(y_true, y_pred)
        for kk in top_k:
            if kk < k:
                # sklearn wants a 1-d score when the task is binary (K == 2, so only k = 1).
                score = proba[:, 1] if k == 2 else proba
                out[f"top{kk}_accuracy"] = top_k_accuracy_score(y_true, score, k=kk, labels=labels)
        out["log_loss"] = log_loss(y_true, proba, labels=labels)

        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        for avg in ("macro", "micro", "weighted"):
            pa, ra, fa, _ = precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=avg, zero_division=0)
            out[f"precision_{avg}"], out[f"recall_{avg}"], out[f"f1_{avg}"] = pa, ra, fa

        auc_per, ap_per = _one_vs_rest_scores(y_true, proba, present, out)
        out["ece"], reliability = _calibration(y_true, proba, y_pred)

        out["per_class"] = {
            name: {"precision": p[c], "recall": r[c], "f1": f[c], "support": int(s[c]),
                   "roc_auc": auc_per[c], "average_precision": ap_per[c]}
            for c, name in enumerate(classes)
        }
        out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
        out["curves"] = {"roc": {}, "pr": {}, "reliability": reliability}
        for c, name in enumerate(classes):
            is_c = (y_true == c).astype(int)
            has_pos, has_neg = bool(is_c.any()), not bool(is_c.all())
            if has_pos and has_neg:
                fpr, tpr, thr = roc_curve(is_c, proba[:, c])
                out["curves"]["roc"][name] = {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": auc_per[c]}
            else:  # no positives or no negatives: one axis of the ROC curve is 0/0
                out["curves"]["roc"][name] = None
            if has_pos:
                prec, rec, thr = precision_recall_curve(is_c, proba[:, c])
                out["curves"]["pr"][name] = {"precision": prec, "recall": rec, "thresholds": thr,
                                             "average_precision": ap_per[c]}
            else:  # recall is 0/0 without positives
                out["curves"]["pr"][name] = None
    return _jsonable(out)


def _one_vs_rest_scores(y_true: np.ndarray, proba: np.ndarray, present: np.ndarray,
                        out: dict) -> tuple[list, list]:
    """Fill the ROC AUC / average-precision keys of ``out``; return per-class lists (None = undefined)."""
    k = proba.shape[1]
    auc_per: list = [None] * k
    ap_per: list = [None] * k
    # (N, P) one-vs-rest indicators for the P classes present: sklearn's multi-label averaging
    # over these columns is its "ovr" rule restricted to classes that have positives.
    onehot = (y_true[:, None] == present[None, :]).astype(int)
    scores = proba[:, present]
    if len(present) >= 2:
        aucs = roc_auc_score(onehot, scores, average=None)
        for c, a in zip(present, aucs):
            auc_per[c] = a
        out["roc_auc_ovr_macro"] = roc_auc_score(onehot, scores, average="macro")
        out["roc_auc_ovr_weighted"] = roc_auc_score(onehot, scores, average="weighted")
        aps = average_precision_score(onehot, scores, average=None)
        out["average_precision_macro"] = average_precision_score(onehot, scores, average="macro")
        out["average_precision_weighted"] = average_precision_score(onehot, scores, average="weighted")
    else:  # one class is the whole split: no negatives, so no ROC; AP of the lone column
        out["roc_auc_ovr_macro"] = out["roc_auc_ovr_weighted"] = None
        aps = [average_precision_score(onehot[:, 0], scores[:, 0])]
        out["average_precision_macro"] = out["average_precision_weighted"] = aps[0]
    for c, a in zip(present, aps):
        ap_per[c] = a
    if k == 2:
        both = len(present) == 2
        out["roc_auc"] = roc_auc_score(y_true, proba[:, 1]) if both else None
    else:
        out["roc_auc"] = out["roc_auc_ovr_macro"]
    return auc_per, ap_per


def _calibration(y_true: np.ndarray, proba: np.ndarray, y_pred: np.ndarray) -> tuple[float, list]:
    """Top-label ECE = sum_b (n_b / N) |accuracy_b - confidence_b| and the per-bin table.

    scikit-learn has no multi-class calibration error (calibration_curve is binary only), so
    this is the one figure computed here.
    """
    conf = proba.max(axis=1)
    correct = (y_pred == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    # Bin b holds edges[b] < conf <= edges[b+1] (Guo et al.'s convention); conf = 0 joins bin 0.
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, ECE_BINS - 1)
    n = len(conf)
    ece = 0.0
    table = []
    for b in range(ECE_BINS):
        m = idx == b
        cnt = int(m.sum())
        if cnt:
            mc, acc = float(conf[m].mean()), float(correct[m].mean())
            ece += cnt / n * abs(acc - mc)
        else:
            mc = acc = None
        table.append({"lower": edges[b], "upper": edges[b + 1], "count": cnt,
                      "confidence": mc, "accuracy": acc})
    return ece, table


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE, RMSE, MAE and R^2 (scikit-learn; multi-output targets are averaged uniformly).

    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))["mae"]
    0.3333333333333333
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    with warnings.catch_warnings():
        # R^2 is undefined for one sample; it becomes None below.
        warnings.filterwarnings("ignore", message=".*R\\^2 score is not well-defined.*")
        out = {
            "mse": mean_squared_error(y_true, y_pred),
            "rmse": root_mean_squared_error(y_true, y_pred),
            "mae": mean_absolute_error(y_true, y_pred),
            "r2": r2_score(y_true, y_pred),
            "n_samples": len(y_true),
        }
    return _jsonable(out)


def _jsonable(x):
    """numpy scalars/arrays -> Python numbers/lists; NaN and +-inf -> None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and (x.dtype.kind != "f" or np.isfinite(x).all()):
        return x.tolist()  # one C call: curves hold ~300k numbers, element by element took a second
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x
