"""trainlab.diagnose on synthetic curves with each pathology, and the remedies it suggests."""

import json
import math
import re

import numpy as np
import pytest
import yaml

from trainlab.config import KNOWN_KEYS, Config, load_config
from trainlab.diagnose import KINDS, Finding, diagnose, format_findings

SEEDS = range(10)


def rows_from(train, val, tacc=None, vacc=None, lr=0.01):
    """metrics.jsonl rows as training writes them, passed through JSON like the real file."""
    out = []
    for i, (t, v) in enumerate(zip(train, val)):
        r = {"epoch": i + 1, "lr": lr, "seconds": 1.5, "train_loss": t, "val_loss": v}
        if tacc is not None:
            r["train_accuracy"], r["val_accuracy"] = tacc[i], vacc[i]
        out.append(r)
    return [json.loads(line) for line in (json.dumps(r) for r in out)]  # NaN survives as in the file


def clean(seed=0, n=30):
    """Exponential convergence to a plateau, 1% multiplicative noise on train, 0.005 on val."""
    g, e = np.random.default_rng(seed), np.arange(1, n + 1)
    tr = (0.2 + 2 * np.exp(-e / 4)) * (1 + g.normal(0, 0.01, n))
    va = 0.3 + 2 * np.exp(-e / 4) + g.normal(0, 0.005, n)
    return rows_from(tr, va, 1 - 0.5 * np.exp(-e / 4), 0.9 - 0.5 * np.exp(-e / 4))


def u_shaped(seed=0, n=30, onset=12):
    """Val loss falls until `onset`, then rises 0.015/epoch while train loss keeps falling."""
    g, e = np.random.default_rng(seed), np.arange(1, n + 1)
    tr = (0.05 + 1.5 * np.exp(-e / 5)) * (1 + g.normal(0, 0.01, n))
    va = 0.35 + 1.5 * np.exp(-e / 3) + 0.015 * np.maximum(0, e - onset) + g.normal(0, 0.008, n)
    return rows_from(tr, va, 1 - 0.6 * np.exp(-e / 5), 0.88 - 0.6 * np.exp(-e / 3))


def flat_high(seed=0, n=20):
    """Stuck near chance (ln 10 = 2.30) on a 10-class problem."""
    g, e = np.random.default_rng(seed), np.arange(1, n + 1)
    tr = 2.30 - 0.05 * (1 - np.exp(-e / 2)) + g.normal(0, 0.003, n)
    va = tr + 0.01 + g.normal(0, 0.003, n)
    return rows_from(tr, va, 0.12 + g.normal(0, 0.005, n), 0.11 + g.normal(0, 0.005, n))


def slow_linear(seed=0, n=30):
    g, e = np.random.default_rng(seed), np.arange(1, n + 1)
    tr = 2.30 - 0.01 * e + g.normal(0, 0.001, n)
    va = tr + 0.02 + g.normal(0, 0.002, n)
    return rows_from(tr, va, 0.1 + 0.005 * e, 0.1 + 0.005 * e)


def spiky(seed=0, n=30):
    g, e = np.random.default_rng(seed), np.arange(1, n + 1)
    tr = (0.3 + 1.5 * np.exp(-e / 4)) * (1 + g.normal(0, 0.01, n))
    tr[[7, 14, 21]] *= 2.0  # epochs 8, 15, 22
    return rows_from(tr, tr * 1.1, 1 - 0.4 * np.exp(-e / 4), 0.9 - 0.4 * np.exp(-e / 4))


def kinds(findings):
    return [f.kind for f in findings]


def only(findings, kind):
    found = [f for f in findings if f.kind == kind]
    assert len(found) == 1, (kind, format_findings(findings))
    return found[0]


# ---------------------------------------------------------------- each pathology


@pytest.mark.parametrize("seed", SEEDS)
def test_clean_convergence_is_healthy(seed):
    f = diagnose(clean(seed))
    assert kinds(f) == ["best_epoch", "healthy"], format_findings(f)


@pytest.mark.parametrize("seed", SEEDS)
def test_u_shaped_val_loss_is_overfitting_from_epoch_12(seed):
    f = diagnose(u_shaped(seed))
    over = only(f, "overfitting")
    # Synthetic curves from fixed numpy seeds (0..9): the onset is 12 by construction and the
    # detector reads it through noise of sd 0.008 against a 0.015/epoch rise: within 2 epochs is
    # the detector's resolution, not a rounding allowance (float64, the same on any CPU).
    assert abs(over.epoch - 12) <= 2
    assert str(over.epoch) in over.message and "%" in over.message
    assert "train.early_stopping.patience=3" in over.remedies
    assert f"train.epochs={over.epoch}" in over.remedies
    assert "underfitting" not in kinds(f) and "healthy" not in kinds(f)


def test_overfitting_onset_follows_the_curve():
    assert abs(only(diagnose(u_shaped(onset=20, n=40)), "overfitting").epoch - 20) <= 2  # as above


def test_flat_high_losses_are_underfitting():
    f = diagnose(flat_high())
    under = only(f, "underfitting")
    assert "0.1" in under.message  # the train accuracy is quoted
    assert "model.hidden=[256,256]" in under.remedies  # default mlp [128]: wider and deeper
    assert not {"overfitting", "lr_too_low", "healthy"} & set(kinds(f))


def test_underfitting_regression_without_accuracy():
    g, n = np.random.default_rng(0), 15
    tr = 1.0 - 0.1 * (1 - np.exp(-np.arange(n) / 2)) + g.normal(0, 0.002, n)
    f = diagnose(rows_from(tr, tr + 0.02))
    assert "underfitting" in kinds(f)


def test_regression_converging_is_not_underfitting():
    e = np.arange(1, 21)
    tr = 0.05 + np.exp(-e / 3)
    assert "underfitting" not in kinds(diagnose(rows_from(tr, tr + 0.03)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_nan_at_epoch_5_is_divergence_at_5(bad):
    rows = clean()[:8]
    for r in rows[4:]:
        r["train_loss"] = bad
    f = diagnose(rows)
    div = only(f, "divergence")
    assert div.epoch == 5 and f[0].kind == "divergence"
    assert "optim.lr=0.001" in div.remedies and "train.clip_grad_norm=1.0" in div.remedies
    assert only(f, "best_epoch").epoch <= 4  # epochs after the divergence are not candidates


def test_val_loss_inf_is_divergence():
    rows = clean()[:6]
    rows[2]["val_loss"] = float("inf")
    assert only(diagnose(rows), "divergence").epoch == 3


def test_divergence_at_first_epoch():
    rows = clean()[:3]
    for r in rows:
        r["train_loss"] = float("nan")
    f = diagnose(rows)
    assert only(f, "divergence").epoch == 1 and only(f, "best_epoch").epoch is None


def test_run_without_validation_is_not_divergence():
    rows = clean()
    for r in rows:
        r["val_loss"] = None
        r["val_accuracy"] = None
    f = diagnose(rows)
    assert "divergence" not in kinds(f) and only(f, "best_epoch").epoch is not None


def test_spikes_are_instability_and_lr_too_high():
    f = diagnose(spiky())
    inst = only(f, "instability")
    assert inst.epoch == 8 and "8, 15, 22" in inst.message
    high = only(f, "lr_too_high")
    assert "optim.lr=0.00333" in high.remedies  # 0.01 / 3


def test_single_spike_is_instability_only():
    rows = clean()
    rows[14]["train_loss"] *= 1.8
    f = diagnose(rows)
    assert only(f, "instability").epoch == 15 and "lr_too_high" not in kinds(f)


def test_loss_rising_from_the_start_is_lr_too_high():
    e = np.arange(1, 11)
    tr = 2.3 + 0.1 * e
    high = only(diagnose(rows_from(tr, tr + 0.1, 0.1 + 0 * e, 0.1 + 0 * e)), "lr_too_high")
    assert high.epoch == 1


def test_one_noisy_epoch_does_not_fire():
    rows = clean()
    rows[9]["train_loss"] *= 1.08   # a bumpy epoch, not a spike
    rows[25]["val_loss"] *= 1.15    # one bad validation pass near the end
    assert kinds(diagnose(rows)) == ["best_epoch", "healthy"]


def test_slow_linear_decline_is_lr_too_low():
    f = diagnose(slow_linear())
    low = only(f, "lr_too_low")
    assert "optim.lr=0.1" in low.remedies  # < 0.5%/epoch: x10
    assert "train.epochs=60" in low.remedies
    assert "underfitting" not in kinds(f) and "overfitting" not in kinds(f)


def test_best_epoch_always_reported():
    for make in (clean, u_shaped, flat_high, slow_linear, spiky):
        rows = make()
        f = diagnose(rows)
        best = only(f, "best_epoch")
        val = [r["val_loss"] for r in rows]
        assert best.epoch == int(np.argmin(val)) + 1


def test_best_epoch_by_accuracy_when_monitored():
    rows = u_shaped()
    best = only(diagnose(rows, {"train": {"monitor": "val.accuracy"}}), "best_epoch")
    assert best.epoch == int(np.argmax([r["val_accuracy"] for r in rows])) + 1
    assert "val_accuracy" in best.message


def test_empty_rows():
    assert kinds(diagnose([])) == ["best_epoch"]


# ---------------------------------------------------------------- remedies


def test_remedies_relative_to_config():
    cfg = Config().to_dict()
    cfg["data"]["name"] = "cifar10"
    cfg["model"].update(hidden=[512, 256], dropout=0.4)
    cfg["regularize"]["l2"] = 1e-4
    cfg["train"]["early_stopping"]["patience"] = 5
    cfg["optim"]["lr"] = 0.03
    over = only(diagnose(u_shaped(), cfg), "overfitting")
    r = over.remedies
    assert "model.dropout=0.5" in r and "regularize.l2=0.001" in r
    assert "regularize.augment.crop_padding=4" in r and "regularize.augment.hflip=true" in r
    assert "model.hidden=[256,128]" in r
    assert not any(x.startswith("train.early_stopping.patience") for x in r)  # already on
    assert "optim.lr=0.01" in only(diagnose(spiky(), cfg), "lr_too_high").remedies

    cfg["model"]["dropout"] = 0.5  # at the cap: no more dropout suggested
    cfg["regularize"]["l2"] = 0.0
    r = only(diagnose(u_shaped(), cfg), "overfitting").remedies
    assert not any(x.startswith("model.dropout") for x in r) and "regularize.l2=0.0001" in r

    under = only(diagnose(flat_high(), cfg), "underfitting").remedies
    assert "model.hidden=[1024,512]" in under and "model.dropout=0.3" in under


def test_remedies_accept_a_config_object():
    cfg = load_config(None, ["optim.lr=0.2", "data.name=mnist"])
    r = only(diagnose(spiky(), cfg), "lr_too_high").remedies
    assert "optim.lr=0.0667" in r
    assert "regularize.augment.rotate=10.0" in only(diagnose(u_shaped(), cfg), "overfitting").remedies


def _all_findings():
    cfgs = [None, Config().to_dict(),
            load_config(None, ["data.name=cifar10", "model.name=cnn", "model.dropout=0.1",
                               "regularize.l1=1e-5", "optim.name=adam"]).to_dict(),
            load_config(None, ["model.name=resnet", "data.name=imagefolder", "data.path=x",
                               "train.clip_grad_norm=2.0"]).to_dict()]
    diverged = clean()[:6]
    diverged[5]["train_loss"] = float("nan")
    for cfg in cfgs:
        for rows in (clean(), u_shaped(), flat_high(), slow_linear(), spiky(), diverged):
            yield cfg, diagnose(rows, cfg)


def test_remedies_are_pasteable_overrides():
    defaults = Config().to_dict()
    seen = set()
    for cfg, findings in _all_findings():
        for f in findings:
            assert isinstance(f, Finding) and f.kind in KINDS
            assert f.epoch is None or type(f.epoch) is int
            assert f.message.endswith(".") and re.search(r"\d", f.message)
            for rem in f.remedies:
                assert re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)+=\S+", rem), rem
                key, value = rem.split("=", 1)
                assert key in KNOWN_KEYS, rem
                parsed = yaml.safe_load(value)
                default = _dig(defaults, key)
                if isinstance(default, bool):
                    assert isinstance(parsed, bool), rem
                elif isinstance(default, (int, float)) or default is None:
                    assert isinstance(parsed, (int, float)) and not isinstance(parsed, bool), rem
                    assert math.isfinite(parsed), rem
                else:
                    assert isinstance(parsed, type(default)), rem
                seen.add(key)
            # Each finding's remedies together make a valid config (values in range).
            base = [] if cfg is None else [f"{k}={_dig(cfg, k)}" for k in ("data.name", "data.path")
                                           if _dig(cfg, k) is not None]
            load_config(None, base + f.remedies)
    assert {"optim.lr", "model.dropout", "regularize.l2", "train.epochs",
            "train.early_stopping.patience", "model.hidden", "schedule.name"} <= seen


def _dig(tree, key):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_format_findings():
    text = format_findings(diagnose(u_shaped()))
    assert text.splitlines()[0].startswith("overfitting (epoch ")
    assert "    try: train.early_stopping.patience=3" in text
    assert "best_epoch (epoch" in text
