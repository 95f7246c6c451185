"""train(): the run directory contract and that every optimiser, schedule, loss and regulariser
changes training the way it should (not only that it runs)."""

import json
import math

import pytest
import torch
import yaml

import trainlab
from trainlab.config import build_config
from trainlab.errors import ConfigError, DivergedError
from trainlab.train import train, train_step

from conftest import quick_config


def run(tmp_path, name="run", **sections):
    return train(build_config(quick_config(**sections)), out=tmp_path / name)


def test_run_directory_matches_the_contract(tmp_path):
    result = run(tmp_path)
    d = result.run_dir
    assert {p.name for p in d.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "summary.json"}
    assert {p.name for p in (d / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    resolved = yaml.safe_load((d / "config.yaml").read_text())
    assert set(resolved) >= {"data", "model", "loss", "optim", "schedule", "regularize", "train", "eval"}
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) >= {"epoch", "lr", "seconds", "train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    summary = json.loads((d / "summary.json").read_text())
    assert set(summary) >= {"run_dir", "epochs_run", "best_epoch", "stopped_because", "seconds", "metrics"}
    assert summary["epochs_run"] == 3 and summary["stopped_because"] == "epochs"
    for split in ("train", "val", "test"):
        assert set(summary["metrics"][split]) >= {"loss", "accuracy"}
    assert summary["metrics"]["test"]["accuracy"] > 0.8  # digits, 3 epochs: far above 0.1 chance
    assert result.summary == summary
    # No temp files are left behind by the atomic writes.
    assert not [p for p in d.rglob("*.tmp")]


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path):
    a, b = run(tmp_path, "a"), run(tmp_path, "b")
    c = run(tmp_path, "c", train={"seed": 1})
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert strip(a.history) != strip(c.history)


def test_gd_takes_one_step_per_epoch(tmp_path):
    result = run(tmp_path, optim={"name": "gd", "lr": 0.5, "momentum": 0.0})
    assert [r["step"] for r in result.history] == [1, 2, 3]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_momentum_accelerates_sgd(tmp_path):
    plain = run(tmp_path, "plain", optim={"name": "sgd", "lr": 0.01, "momentum": 0.0})
    momentum = run(tmp_path, "momentum", optim={"name": "momentum", "lr": 0.01})
    assert momentum.history[-1]["train_loss"] < 0.7 * plain.history[-1]["train_loss"]


def _reference_optimizer(name, params, lr):
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=lr),
        "momentum": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
        "nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=lr),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr),
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr),
    }[name]()


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_each_optimiser_is_the_torch_optim_it_names(tmp_path, name):
    """The weights after one epoch equal a plain loop with that torch.optim optimiser, same batches."""
    from trainlab import data
    from trainlab.data.loader import make_batches
    from trainlab.models import build_model

    optim = {"name": "momentum" if name == "nesterov" else name, "lr": 0.01}
    if name == "nesterov":
        optim["nesterov"] = True
    raw = quick_config(train={"epochs": 1})
    raw["optim"] = optim  # the whole section: no momentum left over from quick_config
    cfg = build_config(raw)
    result = train(cfg, out=tmp_path / name)

    splits = data.load(cfg)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.input_shape, 10)
    opt = _reference_optimizer(name, model.parameters(), 0.01)
    batches = make_batches(splits, "train", 32, torch.device("cpu"), torch.float32, cfg, train=True)
    for x, y in batches.epoch(cfg.train.seed, 1):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    for ours, ref in zip(result.model.parameters(), model.parameters()):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_adaptive_optimisers_beat_plain_sgd_at_the_same_small_lr(tmp_path):
    sgd = run(tmp_path, "sgd", optim={"name": "sgd", "lr": 0.001, "momentum": 0.0})
    for name in ("adagrad", "rmsprop", "adam"):
        other = run(tmp_path, name, optim={"name": name, "lr": 0.001})
        assert other.history[-1]["train_loss"] < sgd.history[-1]["train_loss"], name


def _lrs(result):
    return [r["lr"] for r in result.history]


def test_step_schedule_multiplies_lr_every_step_epochs(tmp_path):
    result = run(tmp_path, schedule={"name": "step", "step_epochs": 2, "gamma": 0.5}, train={"epochs": 5})
    assert _lrs(result) == pytest.approx([0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_exponential_schedule_multiplies_lr_every_epoch(tmp_path):
    result = run(tmp_path, schedule={"name": "exponential", "gamma": 0.5})
    assert _lrs(result) == pytest.approx([0.025, 0.0125, 0.00625])


def test_cosine_schedule_decays_to_min_lr(tmp_path):
    result = run(tmp_path, schedule={"name": "cosine", "min_lr": 0.001}, train={"epochs": 4})
    lrs = _lrs(result)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.001)
    assert lrs[1] == pytest.approx(0.001 + 0.049 * (1 + math.cos(math.pi / 2)) / 2, rel=1e-6)


def test_onecycle_rises_to_the_peak_then_anneals(tmp_path):
    result = run(tmp_path, schedule={"name": "onecycle", "pct_start": 0.5}, train={"epochs": 4})
    lrs = _lrs(result)  # lr after the last step of each epoch
    assert lrs[0] < lrs[1] and lrs[1] > lrs[2] > lrs[3]
    assert lrs[1] == pytest.approx(0.05, rel=0.01)   # the peak is optim.lr, at half the steps
    assert lrs[3] < 0.05 / 1000                       # OneCycleLR ends at max_lr / (25 * 1e4)


def test_linear_warmup_ramps_up_from_warmup_start(tmp_path):
    cfg = quick_config(schedule={"name": "constant", "warmup_epochs": 2, "warmup_start": 0.1}, train={"epochs": 3})
    result = train(build_config(cfg), out=tmp_path / "r")
    lrs = _lrs(result)
    assert lrs[0] < lrs[1] <= lrs[2] == pytest.approx(0.05)
    assert lrs[0] == pytest.approx(0.05 * (0.1 + 0.9 * 0.5), rel=0.05)


def test_reduce_on_plateau_cuts_lr_when_val_loss_stalls(tmp_path):
    # lr so small that validation loss cannot improve by ReduceLROnPlateau's 1e-4 threshold.
    result = run(tmp_path, optim={"name": "sgd", "lr": 1e-7, "momentum": 0.0},
                 schedule={"name": "reduce_on_plateau", "patience": 0, "gamma": 0.5}, train={"epochs": 3})
    assert _lrs(result)[-1] < 1e-7


def test_label_smoothing_makes_predictions_less_confident(tmp_path):
    def confidence(result):
        from trainlab import data
        splits = data.load(build_config(quick_config()))
        x = (splits.val.x.float() / 1.0 - torch.tensor(splits.mean).view(1, -1, 1, 1)) / torch.tensor(
            splits.std).view(1, -1, 1, 1)
        with torch.no_grad():
            return result.model.eval()(x).softmax(1).max(1).values.mean().item()
    sharp = run(tmp_path, "sharp", train={"epochs": 5})
    smooth = run(tmp_path, "smooth", loss={"label_smoothing": 0.3}, train={"epochs": 5})
    assert confidence(smooth) < confidence(sharp) - 0.05


def test_mse_loss_trains_a_classifier(tmp_path):
    result = run(tmp_path, loss={"name": "mse"}, optim={"name": "adam", "lr": 0.01}, train={"epochs": 5})
    assert result.metrics["test"]["accuracy"] > 0.8


def test_bce_with_logits_on_binary_breast_cancer(tmp_path):
    result = run(tmp_path, data={"name": "breast_cancer"}, loss={"name": "bce_with_logits"},
                 optim={"name": "adam", "lr": 0.01}, train={"epochs": 10})
    assert result.metrics["test"]["accuracy"] > 0.9
    assert result.model(torch.zeros(2, 30)).shape == (2, 1)


def test_bce_with_logits_refuses_more_than_two_classes(tmp_path):
    with pytest.raises(ConfigError, match="two classes"):
        run(tmp_path, loss={"name": "bce_with_logits"})


def test_mse_regression_on_diabetes(tmp_path):
    result = run(tmp_path, data={"name": "diabetes"}, optim={"name": "adam", "lr": 0.01}, train={"epochs": 20},
                 model={"hidden": [32]})
    test = result.metrics["test"]
    assert set(test) >= {"loss", "rmse", "mae"}
    # Targets' std is about 77: a model that learnt something beats predicting the mean.
    assert test["rmse"] < 65 and test["mae"] < 55


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.ndim > 1])


def test_l1_drives_weights_to_zero(tmp_path):
    base = run(tmp_path, "base", train={"epochs": 5})
    sparse = run(tmp_path, "l1", regularize={"l1": 3e-3}, train={"epochs": 5})
    near_zero = lambda m: (_weights(m).abs() < 1e-3).float().mean().item()  # noqa: E731
    assert near_zero(sparse.model) > 3 * near_zero(base.model) and near_zero(sparse.model) > 0.2


def test_l2_penalty_and_weight_decay_shrink_weights(tmp_path):
    base = run(tmp_path, "base", train={"epochs": 5})
    l2 = run(tmp_path, "l2", regularize={"l2": 1e-2}, train={"epochs": 5})
    wd = run(tmp_path, "wd", optim={"weight_decay": 1e-2}, train={"epochs": 5})
    norm = lambda m: _weights(m).norm().item()  # noqa: E731
    assert norm(l2.model) < 0.9 * norm(base.model)
    assert norm(wd.model) < 0.9 * norm(base.model)


def test_dropout_is_active_in_training_only(tmp_path):
    result = run(tmp_path, model={"dropout": 0.5})
    model = result.model
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    x = torch.randn(8, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    # Dropout costs training fit: train loss under dropout is higher than without.
    plain = run(tmp_path, "plain")
    assert result.history[-1]["train_loss"] > plain.history[-1]["train_loss"]


def test_early_stopping_stops_and_final_uses_the_best_checkpoint(tmp_path):
    # A wide MLP on 300 digits with a high lr overfits within a few epochs.
    result = run(tmp_path, data={"limit": 300}, model={"hidden": [512]},
                 optim={"name": "adam", "lr": 0.01}, train={"epochs": 40, "early_stopping": {"patience": 3}})
    summary = result.summary
    assert summary["stopped_because"] == "early_stopping"
    assert summary["epochs_run"] < 40
    assert summary["epochs_run"] == summary["best_epoch"] + 3
    best_row = result.history[summary["best_epoch"] - 1]
    assert summary["metrics"]["val"]["loss"] == pytest.approx(best_row["val_loss"], rel=1e-5)


def test_final_last_uses_the_last_weights(tmp_path):
    result = run(tmp_path, data={"limit": 300}, model={"hidden": [512]}, optim={"name": "adam", "lr": 0.01},
                 train={"epochs": 25, "final": "last"})
    assert result.summary["metrics"]["val"]["loss"] == pytest.approx(result.history[-1]["val_loss"], rel=1e-5)
    assert result.summary["best_epoch"] != len(result.history)  # it overfitted: best is earlier


def test_gradient_clipping_bounds_the_update():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 4) * 100, torch.randint(0, 3, (16,))
    train_step(model, (x, y), torch.nn.functional.cross_entropy, opt, clip_grad_norm=0.5)
    change = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert change <= 0.5 + 1e-6 and change > 0.49  # an update of exactly the clipped norm


def test_divergence_stops_with_exit_code_4_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(DivergedError) as err:
        run(tmp_path, optim={"name": "sgd", "lr": 1e6, "momentum": 0.9})
    assert err.value.exit_code == 4
    assert "diverged at epoch 1 step" in str(err.value)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_because"] == "diverged"


def test_custom_model_loss_and_step(tmp_path):
    calls = {"loss": 0, "step": 0}
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    def my_loss(out, y):
        calls["loss"] += 1
        return torch.nn.functional.cross_entropy(out, y)

    def my_step(*args):
        calls["step"] += 1
        return train_step(*args)

    result = train(build_config(quick_config()), out=tmp_path / "r", model=model, loss_fn=my_loss, step_fn=my_step)
    assert result.model is model and calls["step"] == result.history[-1]["step"]
    assert calls["loss"] >= calls["step"]
    assert result.metrics["test"]["accuracy"] > 0.8


def test_public_api_mirrors_the_cli():
    assert trainlab.train is train and callable(trainlab.load_config)


def test_fused_optimiser_matches_the_for_loop_to_rounding(tmp_path):
    fused = run(tmp_path, "fused", optim={"fused": True})
    loop = run(tmp_path, "loop", optim={"fused": False})
    for a, b in zip(fused.model.parameters(), loop.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert fused.metrics["test"]["accuracy"] == pytest.approx(loop.metrics["test"]["accuracy"], abs=0.01)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    result = run(tmp_path, train={"precision": "bf16"})
    assert result.metrics["test"]["accuracy"] > 0.8
