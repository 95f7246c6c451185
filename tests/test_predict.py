"""trainlab predict: images and CSV rows prepared exactly as in training; wrong-shaped images refused."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import trainlab
from trainlab import ConfigError, DataError
from trainlab.evaluate import load_run
from trainlab.predict import _table_features

from conftest import run_cli
from test_evaluate import DIABETES, DIGITS, FAST, IRIS_NOVAL, _from_csv, fashion_run, read_predictions, train_once


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(run dir, test images (N, 1, 28, 28) uint8, y_pred, proba) from evaluate's predictions.csv."""
    run = fashion_run(tmp_path_factory)
    metrics = run / "eval" / "metrics.json"
    if not metrics.is_file() or json.loads(metrics.read_text())["split"] != "test":
        trainlab.evaluate(run, report=False)
    classes = json.loads(metrics.read_text())["classes"]
    _, y_pred, proba = _from_csv(run, classes)
    from trainlab.data import idx
    from test_evaluate import FASHION
    images = idx.load("fashion-mnist", str(FASHION.parent), download=False).test.x[:5].numpy()
    return run, images, [classes[i] for i in y_pred], proba


def _batch_size_bound(run, images: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per image: how far predict's probabilities (a batch of 3) may be from evaluate's (a batch
    of eval.batch_size) when only the float32 matmuls' summation order differs, which MKL/oneDNN
    pick per batch shape and per CPU (measured here: logits 1.4e-6 apart, probabilities 7e-7).

    A float32 sum of n terms, in any order, is within n * U * sum|terms| of the exact one
    (U = 2^-24): 4.8e-3 in probability here, a worst case no rounding comes near. Rounding errors
    add like a random walk instead, so sqrt(n) * U * sum|terms| per layer, twice (two orders),
    is the statistical bound used: for the seed MLP's layers n = 785 and 129 (bias included).
    Softmax turns a logit change dz into |dp_k| <= 2 p_k (1 - p_k) max|dz|. Here ~1.8e-4.
    """
    trained = load_run(run)
    x = (torch.from_numpy(images).double().flatten(1) / 255 - trained.splits.mean[0]) / trained.splits.std[0]
    w1, b1, w2, b2 = (p.detach().double() for p in trained.model.parameters())
    u = 2.0 ** -24
    h = torch.relu(x @ w1.T + b1)
    dh = 2 * 785 ** 0.5 * u * (x.abs() @ w1.abs().T + b1.abs())
    dz = 2 * 129 ** 0.5 * u * (h @ w2.abs().T + b2.abs()) + dh @ w2.abs().T
    p = torch.from_numpy(proba)
    return (2 * p * (1 - p) * dz.max(1, keepdim=True).values).max(1).values.numpy()


def _png(path, pixels: np.ndarray, mode: str = "L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def test_images_get_the_probabilities_evaluate_gave(fashion, tmp_path):
    run, images, y_pred, proba = fashion
    folder = tmp_path / "shots"
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        _png(folder / name, images[i, 0])
    _png(folder / ".hidden.png", images[3, 0])
    (folder / "notes.txt").write_text("not an image")
    out = trainlab.predict(run, folder)
    assert [o["input"] for o in out] == [str(folder / n) for n in ("a.png", "b.png", "sub/c.png")]
    bound = _batch_size_bound(run, images[:3], proba[:3])
    for i, o in enumerate(out):
        assert o["predicted"] == y_pred[i]
        assert list(o["probabilities"]) == list(json.loads((run / "eval/metrics.json").read_text())["classes"])
        # Same pixels, same normalisation, same weights: equal up to float32 batch-size effects
        # (was atol=1e-6: 7e-7 was measured here, so another CPU's kernels could exceed it).
        np.testing.assert_allclose(list(o["probabilities"].values()), proba[i], rtol=0, atol=bound[i])
    single = trainlab.predict(run, folder / "b.png")
    assert len(single) == 1 and single[0]["predicted"] == y_pred[1]


def test_wrong_size_or_channels_is_a_clear_error(fashion, tmp_path):
    run, images, _, _ = fashion
    big = _png(tmp_path / "big.png", np.zeros((64, 64, 3), np.uint8), mode="RGB")
    proc = run_cli("predict", run, big)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    for word in (str(big), "64x64", "28x28", "1 channel", "convert('L').resize((28, 28))"):
        assert word in proc.stderr, proc.stderr
    rgb = _png(tmp_path / "rgb.png", np.repeat(images[0, 0][:, :, None], 3, axis=2), mode="RGB")
    with pytest.raises(DataError, match="28x28 RGB .3 channel"):
        trainlab.predict(run, rgb)
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(ConfigError, match="trained on images"):
        trainlab.predict(run, tmp_path / "x.csv")


def test_digits_accepts_an_8x8_grayscale_png(tmp_path_factory, tmp_path):
    run = train_once(tmp_path_factory, "digits", DIGITS)
    trained = load_run(run)
    x = trained.splits.test.x[0, 0].numpy()  # 0..16
    out = trainlab.predict(run, _png(tmp_path / "d.png", np.round(x * 255 / 16).astype(np.uint8)))
    assert out[0]["predicted"] in trained.splits.classes
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0)  # float64 softmax: ~1e-15 off


def _contains_rows(big: torch.Tensor, rows: torch.Tensor) -> bool:
    have = {tuple(r) for r in big.numpy().tolist()}
    return all(tuple(r) in have for r in rows.numpy().tolist())


def test_csv_run_reproduces_one_hot_and_standardisation(tmp_path):
    from sklearn.datasets import load_iris
    iris = load_iris()
    table = tmp_path / "flowers.csv"
    lines = ["sepal_l,site,sepal_w,petal_l,petal_w,species"]
    for i, (row, t) in enumerate(zip(iris.data, iris.target)):
        lines.append(f"{row[0]},{['north', 'south', 'east'][i % 3]},{row[1]},{row[2]},{row[3]},"
                     f"{iris.target_names[t]}")
    table.write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    trainlab.train({"data": {"name": "csv", "path": str(table), "target": "species"}, "optim": {"lr": 0.1},
                    "train": {"epochs": 5, **FAST}}, out=run)
    trained = load_run(run)
    x, numbers = _table_features(table, trained)
    assert numbers == list(range(1, 151)) and x.shape == (150, 7)  # 4 numbers + 3 one-hot columns
    for split in ("train", "val", "test"):  # bit-for-bit the features training saw
        assert _contains_rows(x, getattr(trained.splits, split).x)

    # New rows: columns in another order, no target, an extra column, a site never seen in training.
    new = tmp_path / "new.csv"
    new.write_text("id,petal_w,petal_l,site,sepal_w,sepal_l\n1,0.2,1.4,north,3.5,5.1\n2,2.3,5.9,west,3.0,6.8\n")
    out = trainlab.predict(run, new)
    assert [o["input"] for o in out] == [1, 2]
    for o in out:
        assert o["predicted"] in ("setosa", "versicolor", "virginica")
        assert sum(o["probabilities"].values()) == pytest.approx(1.0)  # float64 softmax: ~1e-15 off
    assert out[0]["predicted"] == "setosa"

    (tmp_path / "short.csv").write_text("sepal_l,site\n5.1,north\n")
    with pytest.raises(DataError, match="sepal_w, petal_l, petal_w"):
        trainlab.predict(run, tmp_path / "short.csv")


def _bunch_csv(bunch, path):
    """A scikit-learn dataset's features as a CSV with its feature names as the header."""
    path.write_text(",".join(bunch.feature_names) + "\n"
                    + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in bunch.data))
    return path


def test_scikit_learn_set_from_csv_through_the_cli(tmp_path_factory, tmp_path):
    from sklearn.datasets import load_iris
    iris = load_iris()
    run = train_once(tmp_path_factory, "iris_noval", IRIS_NOVAL)
    table = _bunch_csv(iris, tmp_path / "iris.csv")
    trained = load_run(run)
    assert _contains_rows(_table_features(table, trained)[0], trained.splits.test.x)
    proc = run_cli("predict", run, table, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["predictions"]) == 150 and result["predictions"][0]["input"] == 1
    assert set(result["predictions"][0]["probabilities"]) == set(iris.target_names)


def test_regression_values_are_in_target_units(tmp_path_factory, tmp_path):
    from sklearn.datasets import load_diabetes
    diabetes = load_diabetes()
    run = train_once(tmp_path_factory, "diabetes", DIABETES)
    table = _bunch_csv(diabetes, tmp_path / "d.csv")
    out = trainlab.predict(run, table)
    values = np.array([o["predicted"] for o in out])
    assert len(out) == 442 and all(o["probabilities"] is None for o in out)
    # Disease progression units (targets 25..346, mean 152), not standardised (mean ~0): a property
    # of the units, wide enough for any model that learnt something.
    assert 50 < values.mean() < 300
    # The test rows get what evaluate wrote for them.
    trainlab.evaluate(run, report=False)
    trained = load_run(run)
    x, _ = _table_features(table, trained)
    first = trained.splits.test.x[0]
    row = int(np.flatnonzero((x == first).all(1).numpy())[0])
    # The same standardised float32 features and weights, batches of 442 here and of 88 in evaluate:
    # only the summation order of 10 + 128 products differs, a few U = 2^-24 of the standardised
    # output, times std 77 over predictions >= 25: ~1e-6 relative at most; rel=1e-5 is margin.
    assert values[row] == pytest.approx(float(read_predictions(run)[1][0]["predicted"]), rel=1e-5)
