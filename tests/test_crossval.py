"""trainlab cv: folds partition the training data, stratification keeps class proportions, the cv
mean agrees with a holdout, normalisation is refitted per fold, bad input exits 2."""

import json

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

import trainlab
from trainlab import data
from trainlab.config import build_config
from trainlab.crossval import cross_validate, fold_indices, fold_splits, summarise, training_pool
from trainlab.data import tabular
from trainlab.errors import ConfigError

from conftest import quick_config, run_cli

DIGITS = quick_config(train={"epochs": 3})


@pytest.fixture(scope="module")
def digits_cv(tmp_path_factory):
    return cross_validate(DIGITS, folds=5, out=tmp_path_factory.mktemp("cv") / "digits")


def test_cv_mean_agrees_with_holdout(digits_cv, tmp_path):
    cv = digits_cv
    assert cv["metric"] == "val.accuracy" and cv["stratified"] is True
    assert len(cv["folds"]) == len(cv["per_fold"]) == 5
    # A single 20% holdout of digits varies by ~±2 points with the split; 5-fold CV averages that out.
    holdout = trainlab.train(build_config(DIGITS), out=tmp_path / "holdout").metrics["val"]["accuracy"]
    # Measured over train.seed=0..4: cv mean 0.949..0.951, holdout 0.924..0.938 of 144 val images,
    # |cv - holdout| 0.011..0.027, seed 0 the largest (0.027: 0.04 is 1.9 images clear). On digits
    # another CPU's rounding flips no prediction (+-1-ulp noise ensemble, see test_train.py), so
    # these margins are for changes to trainlab, not for rounding.
    assert cv["mean"] > 0.9
    assert abs(cv["mean"] - holdout) < 0.04, (cv["mean"], holdout)
    lo, hi = cv["ci95"]
    assert lo < cv["mean"] < hi and cv["std"] > 0
    # float64 mean and std of 5 numbers on both sides: ~1e-16 relative, approx's rel=1e-6 is margin.
    assert cv["mean"] == pytest.approx(np.mean(cv["folds"]))
    assert cv["std"] == pytest.approx(np.std(cv["folds"], ddof=1))


def test_cv_files_and_fold_runs(digits_cv):
    from pathlib import Path

    out = Path(digits_cv["out_dir"])
    saved = json.loads((out / "cv.json").read_text())
    assert saved["folds"] == digits_cv["folds"] and saved["ci95"] == digits_cv["ci95"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "<script" not in html
    # Each fold is an ordinary run: its summary.json val accuracy is the fold's value, its val split
    # is the held-out fold, and the held-out folds add up to the training data (train + val).
    for p in digits_cv["per_fold"]:
        summary = json.loads((Path(p["run_dir"]) / "summary.json").read_text())
        assert summary["metrics"]["val"]["accuracy"] == p["value"]
    assert sum(p["n_held_out"] for p in digits_cv["per_fold"]) == digits_cv["n_examples"]
    pool = training_pool(build_config(DIGITS))
    usual = data.load(build_config(DIGITS))
    assert len(pool.train) == len(usual.train) + len(usual.val) == digits_cv["n_examples"]
    assert torch.equal(pool.test.y, usual.test.y)  # the test split is the usual one, untouched


def test_folds_partition_each_repeat():
    y = np.repeat(np.arange(4), [30, 20, 13, 7])
    plan = fold_indices(y, folds=5, repeats=3, stratified=True, seed=0)
    assert len(plan) == 15
    for repeat in range(3):
        held = [h for r, _, _, h in plan if r == repeat]
        counts = np.bincount(np.concatenate(held), minlength=len(y))
        assert (counts == 1).all()  # every example held out exactly once per repeat
        for r, f, train, h in plan:
            if r == repeat:
                assert not set(train) & set(h) and len(train) + len(h) == len(y)
    # repeats reshuffle: the first folds of repeat 1 and 2 differ
    assert not np.array_equal(plan[0][3], plan[5][3])
    # same seed, same folds
    again = fold_indices(y, folds=5, repeats=3, stratified=True, seed=0)
    assert all(np.array_equal(a[3], b[3]) for a, b in zip(plan, again))


def test_stratified_folds_keep_class_proportions():
    y = np.repeat(np.arange(3), [60, 30, 10])
    for _, _, _, held in fold_indices(y, folds=5, repeats=1, stratified=True, seed=1):
        counts = np.bincount(y[held], minlength=3)
        # Stratified: each fold holds a fifth of each class, to the one example rounding allows.
        assert np.all(np.abs(counts - np.array([12, 6, 2])) <= 1), counts
    # unstratified folds of the same data drift further from the proportions
    drift = [np.abs(np.bincount(y[h], minlength=3) - [12, 6, 2]).max()
             for _, _, _, h in fold_indices(y, folds=5, repeats=4, stratified=False, seed=1)]
    assert max(drift) > 1


def test_fold_normalisation_fitted_on_fold_train_only():
    """wine (tabular): the fold's features are standardised with the fold's training part alone."""
    cfg = build_config({"data": {"name": "wine"}, "train": {"progress": "none"}})
    pool = training_pool(cfg)
    source = tabular.load_sklearn("wine")
    raw_pool, raw_test = data.split_off(source.train, cfg.data.test_fraction, source.task, cfg.data.split_seed)
    train_i, held_i = fold_indices(pool.train.y.numpy(), 4, 1, True, 0)[0][2:]
    fold = fold_splits(pool, train_i, held_i)
    scaler = StandardScaler().fit(raw_pool.x[train_i].double().numpy())
    # The fold is standardised twice (pool statistics, then the fold's on the float32 pool values),
    # each stored in float32: U = 2^-24 of |z| <= 4.4 per storage, the first one scaled by
    # 1 / fold scale ~1: ~1e-6 at most against sklearn's float64 transform; atol=1e-4 is margin.
    for split, raw in ((fold.train, raw_pool.x[train_i]), (fold.val, raw_pool.x[held_i]), (fold.test, raw_test.x)):
        np.testing.assert_allclose(split.x.numpy(), scaler.transform(raw.double().numpy()), atol=1e-4)
    # Recorded in raw units, m + s * (fold mean of float32 z): the float32 storage of z costs
    # s * U * |z| <= 2.6e-7 * s, relative to the raw means (all of wine's are >= 0.36, scale/mean
    # <= 0.5): ~1.3e-7 relative; rtol=1e-5 is margin (atol=1e-6 for features with mean near 0).
    np.testing.assert_allclose(fold.extra["feature_mean"], scaler.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fold.extra["feature_scale"], scaler.scale_, rtol=1e-5)


def test_summarise_t_interval():
    from scipy import stats

    s = summarise([0.9, 0.92, 0.94])
    half = stats.t.ppf(0.975, 2) * 0.02 / np.sqrt(3)
    # float64 on three numbers (0.9 etc. are not exact in binary): ~1e-16 relative; rel=1e-6 is margin.
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    assert s["ci95"] == pytest.approx([0.92 - half, 0.92 + half])
    assert summarise([0.5])["ci95"] is None


def test_cv_regression_uses_loss_and_plain_kfold(tmp_path):
    cv = cross_validate({"data": {"name": "diabetes"}, "train": {"epochs": 2, "progress": "none"}},
                        folds=3, out=tmp_path / "cv")
    assert cv["metric"] == "val.loss" and cv["stratified"] is False and len(cv["folds"]) == 3
    with pytest.raises(ConfigError, match="classification"):
        cross_validate({"data": {"name": "diabetes"}}, folds=3, stratified=True, out=tmp_path / "x")


def test_cv_cli_json(tmp_path):
    out = tmp_path / "cv"
    proc = run_cli("cv", "data.name=iris", "train.epochs=2", "train.progress=none", "--folds", "3",
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) >= {"metric", "folds", "mean", "std", "ci95"} and len(result["folds"]) == 3
    assert result == json.loads((out / "cv.json").read_text())
    assert (out / "report.html").is_file() and (out / "fold-3" / "summary.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--folds", "1"], "at least 2 folds"),
    (["--folds", "41"], "smallest class"),                       # iris: 40 per class in train + val
    (["--folds", "500", "--no-stratified"], "more than the 120 training examples"),
])
def test_cv_cli_errors_exit_2(tmp_path, args, message):
    proc = run_cli("cv", "data.name=iris", "train.progress=none", *args, "--out", tmp_path / "cv")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "cv").exists()  # nothing trained, no folder left behind
