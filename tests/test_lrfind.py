"""trainlab lr-find: the lr rises exponentially, the loss curve is recorded and smoothed, the test
stops on divergence, the suggestion lies in the range, and on the seed MLP it trains as well as
the seed's lr 0.01."""

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import trainlab
from trainlab.config import build_config
from trainlab.errors import ConfigError
from trainlab.lrfind import lr_find, smooth, suggest

from conftest import ROOT, quick_config, run_cli

DIGITS = quick_config()


@pytest.fixture(scope="module")
def digits_found(tmp_path_factory):
    return lr_find(DIGITS, min_lr=1e-5, max_lr=10.0, steps=120, out=tmp_path_factory.mktemp("lr") / "digits")


def test_curve_recorded_and_lr_exponential(digits_found):
    f = digits_found
    lr = np.asarray(f["lr"])
    assert len(lr) == len(f["loss"]) == len(f["smoothed_loss"]) == f["steps_run"]
    assert lr[0] == pytest.approx(1e-5)  # float64 schedule arithmetic: ~1e-16, approx's rel=1e-6 is margin
    gamma = (10.0 / 1e-5) ** (1 / 119)
    # A constant factor per step: float64 ratios of float64 lrs, ~119 * 2^-53 = 1e-14 apart at most.
    np.testing.assert_allclose(lr[1:] / lr[:-1], gamma, rtol=1e-6)
    assert all(math.isfinite(v) for v in f["smoothed_loss"][:-1])


def test_stops_on_divergence(digits_found):
    f = digits_found
    assert f["stopped_because"] == "diverged" and f["steps_run"] < 120
    sm = [v for v in f["smoothed_loss"] if v is not None and math.isfinite(v)]
    last = f["loss"][-1]
    # The divergence rule itself (DIVERGE_FACTOR: stop once the smoothed loss passes 4x its minimum).
    assert not math.isfinite(last) or sm[-1] > 4 * min(sm)


def test_suggestion_in_range_and_files(digits_found):
    f = digits_found
    assert 1e-5 <= f["safe_lr"] < f["min_loss_lr"] <= 10.0
    assert 1e-5 <= f["suggested_lr"] <= f["min_loss_lr"]
    assert f["safe_lr"] == pytest.approx(f["min_loss_lr"] / 10)  # one float64 division: exact to 1e-16
    assert f["override"] == f"optim.lr={f['suggested_lr']:.3g}"
    out = Path(f["out_dir"])
    assert Path(f["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "lr_find.json").read_text())["suggested_lr"] == f["suggested_lr"]
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert (out / "config.yaml").is_file()


def test_runs_every_step_through_train_step(monkeypatch, tmp_path):
    train_module = importlib.import_module("trainlab.train")  # `trainlab.train` is the function
    calls = []
    real = train_module.train_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", counting)
    f = lr_find(DIGITS, min_lr=1e-6, max_lr=1e-3, steps=40, out=tmp_path / "lr")
    assert f["stopped_because"] == "steps" and f["steps_run"] == 40 == len(calls)
    assert f["lr"][-1] == pytest.approx(1e-3)  # the range ends at max_lr (float64 powers: ~1e-15 off)


def test_smooth_and_suggest_rules():
    # Bias correction: no ramp up from 0. float64 EMA of a constant: ~50 * 2^-53 relative off.
    assert np.allclose(smooth(np.full(50, 2.0)), 2.0)
    lrs = np.logspace(-6, 1, 200)
    # A loss that falls fastest at lr 1e-2 (a logistic step in log10 lr), then rises past lr 1.
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-3 * (x + 2))) + np.where(x > 0, 2 * x ** 2, 0)
    picks = suggest(lrs, loss)
    # rel=0.1: the picks are grid points, and neighbouring points of the 200-point grid are
    # 10^(7/199) = 1.084x apart, so the right point or its neighbour (a finite-difference slope) passes.
    assert picks["suggested_lr"] == pytest.approx(1e-2, rel=0.1)
    assert picks["min_loss_lr"] == pytest.approx(1.0, rel=0.1)
    assert picks["safe_lr"] == pytest.approx(picks["min_loss_lr"] / 10)  # one float64 division


@pytest.mark.parametrize("kwargs, message", [
    ({"min_lr": 1.0, "max_lr": 1.0}, "smaller than"),
    ({"min_lr": 0.0, "max_lr": 1.0}, "positive"),
    ({"steps": 5}, "at least 10 steps"),
])
def test_bad_range_is_config_error(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as err:
        lr_find(DIGITS, out=tmp_path / "lr", **kwargs)
    assert err.value.exit_code == 2 and not (tmp_path / "lr").exists()


def test_cli_prints_override_and_json(tmp_path):
    proc = run_cli("lr-find", "data.name=digits", "model.hidden=[32]", "--steps", "40", "--min-lr", "1e-4",
                   "--max-lr", "1", "--out", tmp_path / "lr", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) >= {"suggested_lr", "safe_lr", "plot"}
    assert lines[-2] == result["override"] and lines[-2].startswith("optim.lr=")


def test_cli_min_not_below_max_exits_2():
    proc = run_cli("lr-find", "data.name=digits", "--min-lr", "0.1", "--max-lr", "0.01")
    assert proc.returncode == 2 and "--min-lr 0.1 must be smaller than --max-lr 0.01" in proc.stderr


def test_suggestion_trains_seed_mlp_as_well_as_lr_001(fashion_available, tmp_path):
    """The issue's acceptance test: on the seed MLP (Fashion-MNIST, 12,000 examples, 2 epochs, the
    same seed) the suggested lr reaches at least the validation accuracy of the seed's lr 0.01
    (within 0.01: one seed's noise at this size)."""
    raw = yaml.safe_load((ROOT / "examples/seed_mlp.yaml").read_text())
    raw["data"].update(limit=12000)
    raw["train"].update(epochs=2, progress="none")
    raw["eval"] = {"limit": 2000}
    found = lr_find(build_config(raw), out=tmp_path / "lr")
    assert 1e-7 <= found["suggested_lr"] <= 10

    def val_accuracy(lr: float, name: str) -> float:
        cfg = build_config({**raw, "optim": {**raw["optim"], "lr": lr}})
        return trainlab.train(cfg, out=tmp_path / name).metrics["val"]["accuracy"]

    suggested, seed_lr = val_accuracy(found["suggested_lr"], "suggested"), val_accuracy(0.01, "seed")
    # Within 0.01 (was 0.005, said to be one seed's noise but not measured). Measured, 1,200
    # validation images: the val accuracy of lr 0.01 over train.seed=0..4 is 0.813..0.836, sigma
    # 0.0084: one seed's noise, rounded up to 0.01. Paired with the suggestion at the same seed the
    # differences were -0.002, 0, -0.008, -0.008, -0.005 (the suggestion, 0.0045..0.0165, is a bit
    # below lr 0.01's accuracy at 2 epochs), so 0.005 held for seed 0 by 4 images only. Another
    # CPU's rounding (ReLU flips: chaotic, see test_parity.py) shifted the seed-0 difference by 0 or
    # +3 images over 6 +-1-ulp noise seeds (the suggestion stayed 0.0114); seed 0 now has 10 images.
    assert suggested >= seed_lr - 0.01, (found["suggested_lr"], suggested, seed_lr)
