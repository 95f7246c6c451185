"""Every figure of trainlab.metrics checked against scikit-learn called directly, awkward cases included."""

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from trainlab.metrics import ECE_BINS, classification_metrics, regression_metrics

# Both sides compute in float64 from the same float64 inputs and differ only in the order of
# their sums: n * 2^-53 relative for n <= a few hundred examples, ~1e-13 against these figures
# of size <= ~2 (log loss), so 1e-9 is 4 orders of margin on any CPU (numpy's SIMD pairwise
# sums included). The ECE case is hand computed in decimals: float64 rounding, ~1e-16.
TOL = 1e-9


def close(a, b):
    return a is not None and b is not None and abs(a - b) <= TOL


def _proba(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sk(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def check_common(m, y, p, classes):
    """The figures sklearn defines in every case, computed here straight from sklearn."""
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(axis=1)
    assert close(m["accuracy"], skm.accuracy_score(y, pred))
    assert close(m["balanced_accuracy"], _sk(skm.balanced_accuracy_score, y, pred))
    assert close(m["log_loss"], skm.log_loss(y, p, labels=labels))
    for avg in ("macro", "micro", "weighted"):
        pr, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert close(m[f"precision_{avg}"], pr) and close(m[f"recall_{avg}"], rc) and close(m[f"f1_{avg}"], f1)
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for c, name in enumerate(classes):
        pc = m["per_class"][name]
        assert close(pc["precision"], pr[c]) and close(pc["recall"], rc[c]) and close(pc["f1"], f1[c])
        assert pc["support"] == sup[c] and type(pc["support"]) is int
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=labels).tolist()
    for kk in (2, 3, 5):
        key = f"top{kk}_accuracy"
        if kk < k and key in m:
            assert close(m[key], skm.top_k_accuracy_score(y, p, k=kk, labels=labels))
    # Per-class curves and AP for every class with positives (and negatives, for ROC).
    for c, name in enumerate(classes):
        is_c = (y == c).astype(int)
        if is_c.any():
            prec, rec, thr = _sk(skm.precision_recall_curve, is_c, p[:, c])
            cur = m["curves"]["pr"][name]
            np.testing.assert_allclose(cur["precision"], prec, atol=TOL)
            np.testing.assert_allclose(cur["recall"], rec, atol=TOL)
            np.testing.assert_allclose(cur["thresholds"], thr, atol=TOL)
            ap = skm.average_precision_score(is_c, p[:, c])
            assert close(m["per_class"][name]["average_precision"], ap) and close(cur["average_precision"], ap)
        else:
            assert m["curves"]["pr"][name] is None and m["per_class"][name]["average_precision"] is None
        if is_c.any() and not is_c.all():
            fpr, tpr, thr = skm.roc_curve(is_c, p[:, c])
            cur = m["curves"]["roc"][name]
            np.testing.assert_allclose(cur["fpr"], fpr, atol=TOL)
            np.testing.assert_allclose(cur["tpr"], tpr, atol=TOL)
            assert cur["thresholds"][0] is None and np.isinf(thr[0])  # +inf -> None for JSON
            np.testing.assert_allclose(cur["thresholds"][1:], thr[1:], atol=TOL)
            auc = skm.roc_auc_score(is_c, p[:, c])
            assert close(m["per_class"][name]["roc_auc"], auc) and close(cur["auc"], auc)
        else:
            assert m["curves"]["roc"][name] is None and m["per_class"][name]["roc_auc"] is None
    json.dumps(m, allow_nan=False)


@pytest.fixture
def multiclass():
    """4 classes, all present; class 3 is never predicted."""
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 0, 1, 2, 3, 1, 0, 2])
    logits = rng.normal(size=(len(y), 4))
    logits[np.arange(len(y)), y] += 1.0
    logits[:, 3] -= 5.0  # never the argmax
    return y, _proba(logits), ["t-shirt", "trouser", "pullover", "dress"]


def test_multiclass_all_present_matches_sklearn_ovr(multiclass):
    y, p, classes = multiclass
    m = classification_metrics(y, p, classes, top_k=(2, 3, 5))
    assert 3 not in p.argmax(axis=1)
    assert m["per_class"]["dress"]["precision"] == 0.0  # never predicted -> zero_division=0
    check_common(m, y, p, classes)
    assert "top5_accuracy" not in m  # k >= K is meaningless, skipped
    assert close(m["top2_accuracy"], skm.top_k_accuracy_score(y, p, k=2, labels=range(4)))
    for avg in ("macro", "weighted"):
        ref = skm.roc_auc_score(y, p, multi_class="ovr", average=avg, labels=range(4))
        assert close(m[f"roc_auc_ovr_{avg}"], ref)
    assert m["roc_auc"] == m["roc_auc_ovr_macro"]
    onehot = np.eye(4, dtype=int)[y]
    for avg in ("macro", "weighted"):
        assert close(m[f"average_precision_{avg}"], skm.average_precision_score(onehot, p, average=avg))
    assert m["n_samples"] == len(y) and m["n_classes"] == 4


def test_class_absent_from_split_uses_present_classes_only(multiclass):
    y, p, classes = multiclass
    keep = y != 2  # "pullover" absent from this split, still a column of proba
    y, p = y[keep], p[keep]
    m = classification_metrics(y, p, classes)
    check_common(m, y, p, classes)
    # sklearn's ovr macro is NaN once a class has no positives; the documented rule is
    # sklearn's multi-label averaging over the columns of the classes present.
    assert np.isnan(_sk(skm.roc_auc_score, y, p, multi_class="ovr", average="macro", labels=range(4)))
    # The weighted mean gives the absent class weight 0, so there both rules agree.
    assert close(m["roc_auc_ovr_weighted"],
                 _sk(skm.roc_auc_score, y, p, multi_class="ovr", average="weighted", labels=range(4)))
    present = [0, 1, 3]
    onehot = np.stack([(y == c).astype(int) for c in present], axis=1)
    for avg in ("macro", "weighted"):
        assert close(m[f"roc_auc_ovr_{avg}"], skm.roc_auc_score(onehot, p[:, present], average=avg))
        assert close(m[f"average_precision_{avg}"],
                     skm.average_precision_score(onehot, p[:, present], average=avg))
    per = [skm.roc_auc_score(y == c, p[:, c]) for c in present]
    assert close(m["roc_auc_ovr_macro"], float(np.mean(per)))
    assert m["per_class"]["pullover"] == {"precision": m["per_class"]["pullover"]["precision"], "recall": 0.0,
                                          "f1": 0.0, "support": 0, "roc_auc": None, "average_precision": None}


def test_two_classes_present_out_of_four():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = _proba(np.array([[2, 1, 0, 0], [0, 1, 0, 3], [0, 2, 1, 0], [1, 0, 0, 0], [0, 3, 0, 0], [1, 1, 0, 0.0]]))
    m = classification_metrics(y, p, list("abcd"))
    check_common(m, y, p, list("abcd"))
    onehot = np.stack([y == 0, y == 1], axis=1).astype(int)
    assert close(m["roc_auc_ovr_macro"], skm.roc_auc_score(onehot, p[:, :2], average="macro"))


def test_single_class_present():
    y = np.array([1, 1, 1, 1])
    p = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    check_common(m, y, p, ["a", "b", "c"])
    assert m["roc_auc"] is None and m["roc_auc_ovr_macro"] is None and m["roc_auc_ovr_weighted"] is None
    ap = skm.average_precision_score(np.ones(4, int), p[:, 1])
    assert close(m["average_precision_macro"], ap) and close(m["average_precision_weighted"], ap)
    assert close(m["accuracy"], 0.5) and close(m["balanced_accuracy"], 0.5)


def test_ties_take_lowest_index():
    y = np.array([0, 1, 2, 1, 2, 0])
    p = np.array([[1 / 3] * 3,            # tie of three -> 0
                  [0.4, 0.4, 0.2],        # tie 0/1 -> 0
                  [0.2, 0.4, 0.4],        # tie 1/2 -> 1
                  [0.1, 0.45, 0.45],      # tie 1/2 -> 1
                  [0.1, 0.1, 0.8],
                  [0.5, 0.25, 0.25]])
    m = classification_metrics(y, p, ["x", "y", "z"], top_k=(1, 2))
    expected_pred = np.array([0, 0, 1, 1, 2, 0])
    assert close(m["accuracy"], skm.accuracy_score(y, expected_pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, expected_pred, labels=range(3)).tolist()
    check_common(m, y, p, ["x", "y", "z"])
    for avg in ("macro", "weighted"):
        assert close(m[f"roc_auc_ovr_{avg}"], skm.roc_auc_score(y, p, multi_class="ovr", average=avg))
    # top-k follows sklearn's own tie rule (highest index first)
    assert close(m["top1_accuracy"], skm.top_k_accuracy_score(y, p, k=1, labels=range(3)))


def test_binary():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p1 = np.array([0.1, 0.8, 0.5, 0.5, 0.3, 0.7, 0.2, 0.9])
    p = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, p, ["neg", "pos"], top_k=(1, 5))
    check_common(m, y, p, ["neg", "pos"])
    assert close(m["roc_auc"], skm.roc_auc_score(y, p1))
    assert close(m["roc_auc_ovr_macro"], skm.roc_auc_score(y, p1))
    assert close(m["per_class"]["pos"]["average_precision"], skm.average_precision_score(y, p1))
    assert close(m["top1_accuracy"], skm.top_k_accuracy_score(y, p1, k=1, labels=[0, 1]))
    assert "top5_accuracy" not in m
    assert close(m["precision_macro"], skm.precision_score(y, p.argmax(1), average="macro"))


def test_binary_one_class_present():
    y = np.array([0, 0, 0])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    m = classification_metrics(y, p, ["neg", "pos"])
    check_common(m, y, p, ["neg", "pos"])
    assert m["roc_auc"] is None


def test_ece_hand_computed():
    # conf 0.90 right, 0.92 wrong -> bin (13/15, 14/15]: |0.5 - 0.91| = 0.41, weight 2/5
    # conf 0.75 right (11/15, 12/15]: 0.25;  0.70 right (10/15, 11/15]: 0.30;  0.55 wrong (8/15, 9/15]: 0.55
    p = np.array([[0.90, 0.10], [0.08, 0.92], [0.75, 0.25], [0.30, 0.70], [0.45, 0.55]])
    y = np.array([0, 0, 0, 1, 0])
    m = classification_metrics(y, p, ["a", "b"])
    assert abs(m["ece"] - (2 * 0.41 + 0.25 + 0.30 + 0.55) / 5) <= TOL
    rel = m["curves"]["reliability"]
    assert len(rel) == ECE_BINS == 15
    assert [b["count"] for b in rel] == [0] * 8 + [1, 0, 1, 1, 0, 2, 0]
    assert close(rel[13]["confidence"], 0.91) and close(rel[13]["accuracy"], 0.5)
    assert close(rel[8]["accuracy"], 0.0) and rel[0]["confidence"] is None
    assert close(rel[0]["lower"], 0.0) and close(rel[-1]["upper"], 1.0)


def test_ece_perfectly_calibrated_is_zero():
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = classification_metrics(np.array([0, 1]), p, ["a", "b"])
    assert m["ece"] == 0.0 and m["curves"]["reliability"][-1]["count"] == 2


def test_json_serialisable_strict(multiclass):
    y, p, classes = multiclass
    m = classification_metrics(y[y != 1], p[y != 1], classes)
    text = json.dumps(m, allow_nan=False)

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert x is None or type(x) in (int, float, str, bool), type(x)
    walk(json.loads(text))
    walk(m)


def test_bad_inputs():
    p = np.full((3, 2), 0.5)
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1, 2]), p, ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1, 1]), p, ["a", "b", "c"])
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), p, ["a", "b"])


def test_regression_matches_sklearn():
    y = np.array([3.0, -0.5, 2.0, 7.0, 1.5])
    yp = np.array([2.5, 0.0, 2.0, 8.0, 1.0])
    m = regression_metrics(y, yp)
    assert close(m["mse"], skm.mean_squared_error(y, yp))
    assert close(m["rmse"], np.sqrt(skm.mean_squared_error(y, yp)))
    assert close(m["mae"], skm.mean_absolute_error(y, yp))
    assert close(m["r2"], skm.r2_score(y, yp))
    json.dumps(m, allow_nan=False)
    assert regression_metrics(np.array([1.0]), np.array([2.0]))["r2"] is None  # undefined, not NaN


def test_json_writers_turn_non_finite_numbers_into_null_on_every_path(tmp_path):
    """The fast paths (whole numpy arrays, lists of plain numbers) and the slow ones agree."""
    import json
    import math

    import numpy as np

    from trainlab.metrics import _jsonable
    from trainlab.runs import atomic_write_json

    assert _jsonable(np.array([1.0, np.nan, -np.inf])) == [1.0, None, None]
    assert _jsonable(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert _jsonable({"a": np.array([True, False])}) == {"a": [True, False]}
    value = {"finite": [0.5, 2, True], "nan": [1.0, float("nan")], "big": [1e308, 1e308],
             "nested": [[1.0, float("inf")], ["text", None]], "tuple": (1.0, 2.0)}
    for indent in (2, None):
        atomic_write_json(tmp_path / "x.json", value, indent=indent)
        back = json.loads((tmp_path / "x.json").read_text())
        assert back == {"finite": [0.5, 2, True], "nan": [1.0, None], "big": [1e308, 1e308],
                        "nested": [[1.0, None], ["text", None]], "tuple": [1.0, 2.0]}
        assert all(math.isfinite(v) for v in back["big"])
