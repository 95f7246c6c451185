"""trainlab evaluate: metrics.json agrees with scikit-learn recomputed from predictions.csv; bad input exits 2."""

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score, root_mean_squared_error

import trainlab
from trainlab import data
from trainlab.data import idx
from trainlab.config import build_config, load_config
from trainlab.evaluate import csv_safe

from conftest import FASHION, ROOT, quick_config, run_cli

FAST = {"progress": "none"}
DIGITS = quick_config(train={"epochs": 4})
IRIS_NOVAL = {"data": {"name": "iris", "val_fraction": 0.0}, "train": {"epochs": 2, "monitor": "train.loss", **FAST}}
DIABETES = {"data": {"name": "diabetes"}, "optim": {"lr": 0.01}, "train": {"epochs": 5, **FAST}}


def train_once(tmp_path_factory, name: str, raw: dict) -> Path:
    """Train `raw` once per test session (shared by test_evaluate and test_predict); returns the run dir."""
    out = tmp_path_factory.getbasetemp() / "runs" / name
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        trainlab.train(build_config(raw), out=out)
    return out


def fashion_run(tmp_path_factory) -> Path:
    """The seed's MLP (784-128-10, SGD lr 0.01 momentum 0.9) on 2,000 Fashion-MNIST images, 2 epochs."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), \
        "Fashion-MNIST missing: run `make setup` as root (installs Debian's dataset-fashion-mnist)"
    raw = yaml.safe_load((ROOT / "examples/seed_mlp.yaml").read_text())
    raw["data"]["limit"] = 2000
    raw["train"].update(epochs=2, progress="none")
    raw["eval"] = {"limit": 2000}  # the first 2,000 test images: the test split as train() scores it
    return train_once(tmp_path_factory, "fashion", raw)


def read_predictions(run: Path) -> tuple[list[str], list[dict]]:
    with open(run / "eval" / "predictions.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _from_csv(run: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true, y_pred, proba) read back from predictions.csv alone."""
    header, rows = read_predictions(run)
    p_cols = [f"p_{c}" for c in csv_safe(classes)]
    assert header == ["index", "true", "predicted", *p_cols]
    index = {c: i for i, c in enumerate(classes)}
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    y_true = np.array([index[r["true"]] for r in rows])
    y_pred = np.array([index[r["predicted"]] for r in rows])
    proba = np.array([[float(r[c]) for c in p_cols] for r in rows])
    return y_true, y_pred, proba


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(run dir, evaluate()'s result on the test split)."""
    run = fashion_run(tmp_path_factory)
    return run, trainlab.evaluate(run, report=False)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return train_once(tmp_path_factory, "digits", DIGITS)


def test_fashion_mnist_metrics_agree_with_sklearn_on_predictions_csv(fashion):
    fashion, m = fashion
    saved = json.loads((fashion / "eval" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(m))
    assert m["split"] == "test" and m["checkpoint"] == "best" and m["task"] == "classification"
    assert m["classes"][0] == "T-shirt/top" and "curves" not in m
    y_true, y_pred, proba = _from_csv(fashion, m["classes"])
    assert len(y_true) == m["n_examples"] == 2000  # one row per example scored (eval.limit = 2000)
    assert (y_pred == proba.argmax(1)).all()
    # float64 softmax, written with repr (exact round trip): 10 terms sum to 1 within ~10 * 2^-53.
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    # 1e-9 here and below: float64 figures from the same predictions on both sides, differing only
    # in summation order: <= n * 2^-53 = 2e-13 relative for n = 2,000 (AUC: one sort, the same).
    assert abs(m["accuracy"] - accuracy_score(y_true, y_pred)) <= 1e-9
    assert abs(m["f1_macro"] - f1_score(y_true, y_pred, average="macro")) <= 1e-9
    assert abs(m["recall_macro"] - recall_score(y_true, y_pred, average="macro")) <= 1e-9
    assert abs(m["roc_auc_ovr_macro"] - roc_auc_score(y_true, proba, multi_class="ovr", average="macro")) <= 1e-9
    # The same weights and data as train()'s final test pass (summary.json), and a sane model.
    summary = json.loads((fashion / "summary.json").read_text())
    # Both are counts of right predictions / 2,000 from the same weights and batches: equal.
    assert abs(m["accuracy"] - summary["metrics"]["test"]["accuracy"]) <= 1e-9
    # A sane model: 0.729 here on 2,000 test images, train.seed=0..4: 0.708..0.767; 0.6 is 216+
    # images below the worst seed, which bounds another CPU's (chaotic, see test_parity.py) rounding.
    assert m["accuracy"] > 0.6
    assert set(json.loads((fashion / "eval" / "curves.json").read_text())) == {"roc", "pr", "reliability"}


def test_wrong_examples_are_the_most_confident_mistakes_with_raw_pixels(fashion):
    fashion, m = fashion
    with np.load(fashion / "eval" / "wrong_examples.npz", allow_pickle=False) as z:
        w = {k: z[k] for k in z.files}
    assert set(w) == {"images", "true", "predicted", "confidence", "index"}
    assert w["images"].shape == (25, 1, 28, 28) and w["images"].dtype == np.uint8
    assert (w["true"] != w["predicted"]).all()
    assert (np.diff(w["confidence"]) <= 0).all()
    y_true, y_pred, proba = _from_csv(fashion, m["classes"])
    wrong = y_pred != y_true
    assert w["confidence"][-1] >= np.sort(proba.max(1)[wrong])[-25]  # none more confident left out
    np.testing.assert_array_equal(w["true"], y_true[w["index"]])
    # The same float64 probabilities, one through the .npz and one through repr() in the CSV: exact
    # (rtol=1e-15 is ~4 ulps of margin).
    np.testing.assert_allclose(w["confidence"], proba.max(1)[w["index"]], rtol=1e-15)
    test_images = idx.load("fashion-mnist", str(FASHION.parent), download=False).test.x  # the official test split
    np.testing.assert_array_equal(w["images"], test_images[w["index"]].numpy())


def test_val_and_test_splits_have_one_row_per_example(digits):
    splits = data.load(load_config(digits / "config.yaml"))
    for split in ("val", "test"):
        m = trainlab.evaluate(digits, split=split, report=False)
        y_true, y_pred, proba = _from_csv(digits, m["classes"])
        assert m["split"] == split and m["n_examples"] == len(y_true) == len(getattr(splits, split))
        np.testing.assert_array_equal(y_true, getattr(splits, split).y.numpy())
        assert abs(m["f1_macro"] - f1_score(y_true, y_pred, average="macro")) <= 1e-9  # float64, as above
        assert sum(map(sum, m["confusion_matrix"])) == len(y_true)
    with np.load(digits / "eval" / "wrong_examples.npz", allow_pickle=False) as z:
        assert z["images"].dtype == np.float32 and z["images"].shape[1:] == (1, 8, 8)  # digits: 0..16 floats
    findings = json.loads((digits / "eval" / "diagnosis.json").read_text())
    assert findings and all(set(f) == {"kind", "message", "epoch", "remedies"} for f in findings)
    assert any(f["kind"] == "best_epoch" for f in findings)


def test_eval_limit_is_respected(digits, tmp_path):
    run = tmp_path / "limited"
    shutil.copytree(digits, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["eval"]["limit"] = 50
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    m = trainlab.evaluate(run, report=False)
    assert m["n_examples"] == 50 and len(read_predictions(run)[1]) == 50


def test_binary_bce_run(tmp_path_factory):
    run = train_once(tmp_path_factory, "cancer", {"data": {"name": "breast_cancer"}, "loss": {"name": "bce_with_logits"},
                                                 "optim": {"lr": 0.05}, "train": {"epochs": 3, **FAST}})
    m = trainlab.evaluate(run, report=False)
    y_true, y_pred, proba = _from_csv(run, m["classes"])
    assert proba.shape[1] == 2 and m["classes"] == ["malignant", "benign"]
    # float64 on the same predictions, summation order only: ~n * 2^-53 = 1e-14 for n = 114.
    assert abs(m["roc_auc"] - roc_auc_score(y_true, proba[:, 1])) <= 1e-9
    assert abs(m["accuracy"] - accuracy_score(y_true, y_pred)) <= 1e-9
    assert not (run / "eval" / "wrong_examples.npz").exists()  # tabular: no image grid


def test_regression_predictions_are_in_target_units(tmp_path_factory):
    run = train_once(tmp_path_factory, "diabetes", DIABETES)
    m = trainlab.evaluate(run, report=False)
    header, rows = read_predictions(run)
    assert header == ["index", "true", "predicted"] and m["classes"] is None and m["task"] == "regression"
    y = np.array([float(r["true"]) for r in rows])
    p = np.array([float(r["predicted"]) for r in rows])
    splits = data.load(load_config(run / "config.yaml"))
    # Diabetes progression, 25..346: the CSV's true column is splits.test.y itself (integers, exact
    # in float32) written with repr(): equal; rtol=1e-6 is margin only.
    np.testing.assert_allclose(y, splits.test.y.numpy(), rtol=1e-6)
    # float64 on the same CSV values (rmse ~60): n * 2^-53 * 60 = 6e-13 for n = 88, 1e-9 is margin.
    assert abs(m["rmse"] - root_mean_squared_error(y, p)) <= 1e-9
    summary = json.loads((run / "summary.json").read_text())
    # The same weights and outputs; train() scores them against float32-rounded standardised
    # targets (U = 2^-24 of |z| <= 3.5: 2e-7 of std, per example), evaluate against the raw targets
    # in float64: residuals ~0.75 std, so ~3e-7 relative; rel=1e-4 is margin (batching too).
    assert m["rmse"] == pytest.approx(summary["metrics"]["test"]["rmse"], rel=1e-4)
    assert {"mse", "rmse", "mae", "r2"} <= set(m)
    assert not (run / "eval" / "curves.json").exists()


def _clean_error(proc, code, *words):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_cli_json_last_line_is_metrics_json(digits):
    proc = run_cli("evaluate", digits, "--split", "val", "--json")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads((digits / "eval" / "metrics.json").read_text())
    assert last["split"] == "val"
    assert "f1_macro" in proc.stdout and "precision" in proc.stdout  # the table came first
    assert (digits / "report.html").is_file()


class _Proc:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def _main(capsys, *args) -> _Proc:
    """trainlab.cli.main in this process (a subprocess costs seconds of imports): exit code and stderr."""
    from trainlab.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    return _Proc(code, capsys.readouterr().err)


def test_cli_bad_input_exits_2(tmp_path_factory, tmp_path, digits, capsys, monkeypatch):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    # A run folder without any checkpoint: say so and say to train first (as a user runs it).
    empty = tmp_path / "nockpt"
    (empty / "checkpoints").mkdir(parents=True)
    shutil.copy(digits / "config.yaml", empty / "config.yaml")
    _clean_error(run_cli("evaluate", empty), 2, str(empty), "checkpoint", "Train it first")
    # Half-written: no config.yaml, or a torn one.
    (empty / "config.yaml").unlink()
    _clean_error(_main(capsys, "evaluate", empty), 2, "config.yaml", str(empty))
    (empty / "config.yaml").write_text("data: {name: dig")
    _clean_error(_main(capsys, "evaluate", empty), 2, "config.yaml")
    _clean_error(_main(capsys, "evaluate", tmp_path / "nowhere"), 2, "does not exist")
    # Splits: an unknown name, and val when the run has no validation split.
    _clean_error(_main(capsys, "evaluate", digits, "--split", "validation"), 2, "validation", "train, val, test")
    noval = train_once(tmp_path_factory, "iris_noval", IRIS_NOVAL)
    _clean_error(run_cli("evaluate", noval, "--split", "val"), 2, "no 'val' split", "train, test")


def test_csv_safe_names_stay_distinct():
    assert csv_safe(["T-shirt/top", "Ankle boot", "a,b", "a b", ""]) == \
        ["T-shirt_top", "Ankle_boot", "a_b", "a_b_2", "class"]
