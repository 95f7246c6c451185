"""Packed training (trainlab.packed) against separate train() runs and against torch.optim."""

import dataclasses

import pytest
import torch

from trainlab import data
from trainlab.checkpoint import load_weights
from trainlab.config import build_config, load_config
from trainlab.models import build_model
from trainlab.packed import StackedOptimizer, pack_key, train_packed
from trainlab.train import train

from conftest import ROOT, quick_config


pytestmark = pytest.mark.usefixtures("one_thread")


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _digits_members():
    """Five members that differ in every per-member key a search touches (lr <= 0.05)."""
    base = quick_config(train={"epochs": 1, "dtype": "float64"}, model={"hidden": [32, 16]})
    variants = [
        {"optim": {"lr": 0.05, "momentum": 0.9}},
        {"optim": {"lr": 0.01, "momentum": 0.0, "weight_decay": 1e-3}, "regularize": {"l2": 1e-3}},
        {"optim": {"lr": 0.03, "momentum": 0.5, "nesterov": True}, "train": {"seed": 1},
         "regularize": {"l1": 1e-4}},
        {"optim": {"lr": 0.02}, "model": {"dropout": 0.2}, "schedule": {"name": "cosine", "warmup_epochs": 0.5},
         "train": {"clip_grad_norm": 0.5}},
        {"optim": {"name": "adam", "lr": 0.003}, "train": {"seed": 2}},
    ]
    cfgs = []
    for v in variants:
        raw = {k: dict(s) for k, s in base.items()}
        for section, values in v.items():
            raw[section] = {**raw.get(section, {}), **values}
        cfgs.append(build_config(raw))
    return cfgs


def test_float64_pack_equals_separate_runs_after_an_epoch(tmp_path):
    cfgs = _digits_members()
    assert len({pack_key(c) for c in cfgs}) == 1
    splits = data.load(cfgs[0])
    packed = train_packed(cfgs, outs=[tmp_path / f"p{i}" for i in range(len(cfgs))], splits=splits)
    exact = train_packed(cfgs, outs=[tmp_path / f"e{i}" for i in range(len(cfgs))], splits=splits, exact_step=True)
    # float64 (U = 2^-53 = 1.1e-16): batched and separate matmuls sum in other orders, so each step
    # a weight may move an ulp or so differently: 36 steps * 2U * max|w| (~1) = 8e-15 without
    # feedback. The feedback through the gradient is continuous except at ReLU and L1 kinks, which
    # a 1e-14 perturbation crosses only if a pre-activation or weight is within ~1e-14 of 0:
    # ~1e-14 * (1,294 examples * 48 units per epoch) = 1e-9 expected crossings. So 1e-9 is 1e5x
    # the no-feedback bound with no cascade to expect; losses and accuracies likewise (abs=1e-9).
    for i, cfg in enumerate(cfgs):
        alone = train(cfg, out=tmp_path / f"s{i}", splits=splits)
        assert _max_diff(exact[i].model, alone.model) < 1e-9, cfg.optim  # torch.optim per member
        assert _max_diff(packed[i].model, alone.model) < 1e-9, cfg.optim
        for ours, theirs in zip(packed[i].history, alone.history):
            assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-12)  # the same float64 schedule
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key
        for split in ("train", "val", "test"):
            for key, value in alone.metrics[split].items():
                assert packed[i].metrics[split][key] == pytest.approx(value, abs=1e-9)


def test_float32_fashion_mnist_pack_within_1e5_after_20_steps(tmp_path, fashion_available):
    # data.limit=1422 leaves 1280 training examples: 20 steps of 64.
    cfgs = [load_config(ROOT / "examples/seed_mlp.yaml", [f"optim.lr={lr}", "train.epochs=1", "data.limit=1422",
                                                            "train.progress=none", "eval.limit=256"])
            for lr in (0.01, 0.03, 0.1)]
    splits = data.load(cfgs[0])
    assert len(splits.train) == 1280
    packed = train_packed(cfgs, outs=[tmp_path / f"p{i}" for i in range(3)], splits=splits)
    for i, cfg in enumerate(cfgs):
        alone = train(cfg, out=tmp_path / f"s{i}", splits=splits)
        assert packed[i].history[0]["step"] == 20
        # float32, batched vs separate matmuls: each step a weight may move up to ~1 ulp (2U|w|,
        # U = 2^-24) differently; 20 steps without feedback: 20 * 2U * max|w| = 1.1e-6 for the lr 0.1
        # member (max|w| 0.44). The gradient feedback at lr 0.1, momentum 0.9 (an effective lr of 1)
        # amplifies that: +-1 ulp of noise on every weight every step, 10 noise seeds, moved this
        # member by 0.4e-6..2.8e-6 (x2.6 at most; the lr 0.01 and 0.03 members: <= 1.6e-7), and packed
        # vs alone is 2.1e-6 here. A ReLU-flip cascade (see test_parity.py) needs far more than 20
        # steps to become likely. 1e-5 is 3.5x the largest of those: a statistical margin.
        assert _max_diff(packed[i].model, alone.model) < 1e-5


OPTIMISERS = [
    {"name": "sgd", "lr": 0.1},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "fused": False},
    {"name": "momentum", "lr": 0.02, "fused": False, "weight_decay": 1e-3},
    {"name": "adam", "lr": 1e-3},
    {"name": "adam", "lr": 1e-2, "betas": [0.8, 0.99], "weight_decay": 1e-3, "eps": 1e-6},
    {"name": "adamw", "lr": 1e-3},
    {"name": "adamw", "lr": 3e-3, "weight_decay": 0.1, "fused": False},
    {"name": "adagrad", "lr": 0.05},
    {"name": "adagrad", "lr": 0.01, "weight_decay": 1e-3, "eps": 1e-8},
    {"name": "rmsprop", "lr": 1e-3},
    {"name": "rmsprop", "lr": 1e-3, "momentum": 0.9, "alpha": 0.9, "weight_decay": 1e-4},
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_each_optimiser_stacked_update_equals_torch_optim(kind, dtype):
    """StackedOptimizer on K stacked members against one torch.optim optimiser per member.

    The gradients are given (random), not computed from the weights: no feedback through the
    gradient, so rounding accumulates linearly and a worst-case bound is usable (was a fixed
    1e-12 / 2e-6, read off a run: 2e-6 was within 3x of this machine's 7e-7 for sgd). Per step
    and per weight, with eps = 2U the float's machine epsilon: the two sides round the new
    weight once each (eps |p'| together), and each computes the update with at most ~6 roundings
    (grad + wd p, the buffer or moments, sqrt, division, lr *) of quantities that make up the
    update, U |update| each; a buffer's rounding is carried into later updates by momentum
    (beta <= 0.9: at most 1 / (1 - 0.9) = 10 times over); v's and Adagrad's sums carry theirs at
    a relative U per step, which over 12 steps is covered by the same allowance. Together:
    eps |p'| + 2 * 6 * 10 * U |update| = eps (|p'| + 60 |update|), summed over the steps with the
    largest |p'| and the largest update so far. float64 -> ~5e-14, float32 -> ~3e-5 (here
    7e-7 observed for sgd, 2e-7 for the others).
    """
    from trainlab.optim import build_optimizer
    settings = [o for o in OPTIMISERS if o["name"] == kind or (kind == "sgd" and o["name"] == "momentum")]
    members = [build_config({"optim": {**o, "lr": o["lr"] * (1 + 0.1 * j)}}) for j, o in enumerate(settings * 2)]
    if kind == "sgd":  # one momentum-free member in a momentum pack: buf = grad must equal no buffer
        members.append(build_config({"optim": {"name": "sgd", "lr": 0.07, "fused": False}}))
    torch.manual_seed(0)
    k = len(members)
    stacked = [torch.randn(k, 6, 5, dtype=dtype), torch.randn(k, 6, dtype=dtype)]
    separate = [[t[j].clone().requires_grad_() for t in stacked] for j in range(k)]
    optims = [build_optimizer(cfg, params) for cfg, params in zip(members, separate)]
    # The pack reads hyperparameters from optimisers of its own (as train_packed builds them).
    shadows = [build_optimizer(cfg, [torch.zeros(1, dtype=dtype, requires_grad=True)]) for cfg in members]
    if len({bool(o.param_groups[0].get("fused")) for o in shadows}) > 1:
        shadows = [build_optimizer(build_config({"optim": {**cfg.optim.model_dump(), "fused": False}}),
                                   [torch.zeros(1, dtype=dtype, requires_grad=True)]) for cfg in members]
        optims = [build_optimizer(build_config({"optim": {**cfg.optim.model_dump(), "fused": False}}), params)
                  for cfg, params in zip(members, separate)]
    assert StackedOptimizer.supports(shadows)
    stacked_opt = StackedOptimizer(shadows, stacked)
    eps, tol, largest_update = torch.finfo(dtype).eps, 0.0, 0.0
    for step in range(12):
        grads = [torch.randn_like(t) for t in stacked]
        before = [torch.stack([params[i].detach() for params in separate]) for i in range(len(stacked))]
        stacked_opt.step(stacked, grads)
        for j, (opt, params) in enumerate(zip(optims, separate)):
            for p, g in zip(params, grads):
                p.grad = g[j].clone()
            opt.step()
        expected = [torch.stack([params[i].detach() for params in separate]) for i in range(len(stacked))]
        largest_update = max(largest_update, *((e - b).abs().max().item() for e, b in zip(expected, before)))
        tol += eps * (max(e.abs().max().item() for e in expected) + 60 * largest_update)
        for t, e in zip(stacked, expected):
            torch.testing.assert_close(t, e, rtol=0, atol=tol)


def test_same_best_trial_packed_or_not(tmp_path):
    from trainlab.search import search
    space = {"optim.lr": {"loguniform": [0.003, 0.3], "grid": 4}}
    cfg = quick_config(train={"epochs": 2})
    packed = search(cfg, space, out=tmp_path / "packed", quiet=True)
    alone = search(cfg, space, out=tmp_path / "alone", packed=False, quiet=True)
    assert packed["best"]["params"] == alone["best"]["params"]
    # The best trial's val accuracy: a count over 144 images, so equal or >= 1/144 apart. float32
    # packing moves these digits runs by ~1e-7 and rounding there flips no prediction (see
    # test_train.py's noise ensemble): equal; abs=1e-6 only absorbs float formatting.
    assert packed["best"]["value"] == pytest.approx(alone["best"]["value"], abs=1e-6)
    assert packed["best"]["trial"] == alone["best"]["trial"]


def test_a_member_leaving_does_not_disturb_the_others(tmp_path):
    """Pruned at epoch 1, diverged at once, or stopped early: the others train as if alone."""
    base = quick_config(train={"epochs": 3, "dtype": "float64"}, data={"limit": 600})
    lrs = [0.02, 0.04, 1e250, 0.05]  # member 2 diverges (NaN loss) in its first epoch
    cfgs = [build_config({**base, "optim": {"lr": lr, "momentum": 0.9}}) for lr in lrs]
    cfgs[3] = build_config({**base, "optim": {"lr": 0.05, "momentum": 0.9},
                            "train": {**base["train"], "epochs": 2}})  # leaves after epoch 2
    splits = data.load(cfgs[0])
    seen = []

    def prune_second(index, epoch, row):
        seen.append((index, epoch))
        return index == 1 and epoch == 1

    results = train_packed(cfgs, outs=[tmp_path / f"p{i}" for i in range(4)], splits=splits,
                           on_epoch_end=prune_second)
    assert results[1].summary["stopped_because"] == "pruned" and results[1].summary["epochs_run"] == 1
    assert results[2].summary["stopped_because"] == "diverged" and results[2].summary["epochs_run"] == 0
    assert results[3].summary["stopped_because"] == "epochs" and results[3].summary["epochs_run"] == 2
    assert results[0].summary["epochs_run"] == 3
    assert (1, 2) not in seen and (3, 3) not in seen
    for i in (0, 3):
        alone = train(cfgs[i], out=tmp_path / f"s{i}", splits=splits)
        # float64, as in test_float64_pack_equals_separate_runs_after_an_epoch: ~1e-14 expected.
        assert _max_diff(results[i].model, alone.model) < 1e-9
        assert results[i].metrics["val"]["accuracy"] == pytest.approx(alone.metrics["val"]["accuracy"])
    pruned_alone = train(build_config({**cfgs[1].to_dict(), "train": {**cfgs[1].to_dict()["train"], "epochs": 1}}),
                         out=tmp_path / "s1", splits=splits)
    assert _max_diff(results[1].model, pruned_alone.model) < 1e-9


def test_each_member_gets_a_run_directory_train_would_write(tmp_path):
    cfgs = [build_config(quick_config(optim={"lr": lr}, train={"epochs": 2})) for lr in (0.01, 0.05)]
    splits = data.load(cfgs[0])
    results = train_packed(cfgs, outs=[tmp_path / "a", tmp_path / "b"], splits=dataclasses.replace(splits, test=None))
    for result in results:
        run = result.run_dir
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/best.pt"):
            assert (run / name).is_file(), name
        assert len(result.history) == 2 and {"epoch", "lr", "seconds", "train_loss", "val_loss", "train_accuracy",
                                             "val_accuracy"} <= set(result.history[0])
        assert set(result.metrics) == {"train", "val"}  # no test split given: none evaluated
        model = build_model(load_config(run / "config.yaml").model, splits.input_shape, 10)
        load_weights(model, run / "checkpoints" / "best.pt")  # the checkpoint trainlab evaluate reads
        assert _max_diff(model, result.model) == 0.0


def test_pack_key_separates_what_cannot_share_a_pack():
    a = build_config(quick_config())
    assert pack_key(a) == pack_key(build_config(quick_config(optim={"lr": 0.3, "name": "adam"},
                                                             regularize={"l2": 1e-3}, train={"seed": 5})))
    assert pack_key(a) != pack_key(build_config(quick_config(model={"hidden": [64]})))
    assert pack_key(a) != pack_key(build_config(quick_config(train={"batch_size": 64})))
    assert pack_key(build_config(quick_config(model={"name": "cnn"}))) is None
    assert pack_key(build_config(quick_config(model={"batch_norm": True}))) is None


@pytest.mark.parametrize("name,loss", [("diabetes", "auto"), ("breast_cancer", "bce_with_logits")])
def test_regression_and_binary_losses_pack_too(tmp_path, name, loss):
    cfgs = [build_config({"data": {"name": name}, "model": {"hidden": [16]}, "loss": {"name": loss},
                          "optim": {"lr": lr, "momentum": 0.9},
                          "train": {"epochs": 2, "batch_size": 32, "dtype": "float64", "progress": "none"}})
            for lr in (0.01, 0.03)]
    splits = data.load(cfgs[0])
    packed = train_packed(cfgs, outs=[tmp_path / "p0", tmp_path / "p1"], splits=splits)
    for i, cfg in enumerate(cfgs):
        alone = train(cfg, out=tmp_path / f"s{i}", splits=splits)
        # float64, as in test_float64_pack_equals_separate_runs_after_an_epoch: ~1e-14 expected.
        assert _max_diff(packed[i].model, alone.model) < 1e-9
        for split, values in alone.metrics.items():
            for key, value in values.items():
                assert packed[i].metrics[split][key] == pytest.approx(value, abs=1e-9)
