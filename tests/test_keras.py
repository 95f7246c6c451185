"""train.backend=keras: the same network trained by Keras 3 on TensorFlow, on Fashion-MNIST, against the torch backend."""

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, ctrl_c_at, quick_config, run_main
from trainlab import checkpoint
from trainlab.config import load_config
from trainlab.errors import ConfigError, Interrupted
from trainlab.evaluate import evaluate, load_run
from trainlab.train import train

SEED_MLP = ROOT / "examples/seed_mlp.yaml"
U32, U64 = 2.0 ** -24, 2.0 ** -53   # unit roundoffs of float32 and float64
LIBRARY_FACTOR = 7                   # see _rounding_bound


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, fashion_available_module) -> dict:
    """The seed config on each backend: 10 epochs in float32 (the test accuracy, the rows, and
    torch's weights after epoch 1, read from last.pt when that epoch ends: the float64 test's
    reference) and 1 epoch in float64. The lr is constant, so epoch 1's weights are those of a
    1-epoch run."""
    folder, runs = tmp_path_factory.mktemp("seed"), {}
    for backend in ("torch", "keras"):
        out = folder / f"{backend}-float32"

        def keep_epoch_1(epoch: int, row: dict, out=out, backend=backend) -> None:
            if epoch == 1 and backend == "torch":
                runs[backend, "float32"] = _weights(checkpoint.load(out / "checkpoints" / "last.pt")["model"])

        result = train(load_config(SEED_MLP, [f"train.backend={backend}", "train.progress=none"]), out=out,
                       on_epoch_end=keep_epoch_1)
        runs[backend, "ten_epochs"] = result
        cfg64 = load_config(SEED_MLP, [f"train.backend={backend}", "train.dtype=float64", "train.epochs=1",
                                       "train.progress=none", "train.final=last"])
        runs[backend, "float64"] = _weights(train(cfg64, out=folder / f"{backend}-float64").model.state_dict())
    return runs


def _weights(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.double() for k, v in state.items()}


@pytest.fixture(scope="module")
def fashion_available_module():
    from conftest import FASHION
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST is not in {FASHION}: run `make setup` as root (Debian's dataset-fashion-mnist).")
    return FASHION


def _distance(a: dict, b: dict, skip: tuple = ()) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if not k.endswith(skip))


def _rounding_bound(t32: dict, t64: dict, unit: float, skip: tuple = ()) -> float:
    """How far two correct implementations of one run may end apart at unit roundoff `unit`.

    d32 = |torch float32 - torch float64| (max over the weights) is what float32 rounding does to
    this very trajectory (float64's own error is ~2^-29 of it: negligible), so the trajectory's
    amplification of a rounding is A = d32 / U32, and never less than max |w| (one rounding of
    each weight, not amplified: the floor for a run where d32 happens to come out near 0). Each
    backend ends within c * A * unit of the exact trajectory, c the ratio of its kernels' error
    constants to torch's float32 ones (dot products of <= 784 terms, blocked differently by MKL and
    Eigen: c <= LIBRARY_FACTOR); the two within (c + 1) * A * unit. That holds while the trajectory
    is smooth in its roundings; a ReLU or max-pool kink crossed in the float32 run makes d32 jump
    (test_one_epoch_in_float32_agrees_with_torch), which can only widen a float64 bound.
    """
    scale = max(float(w.abs().max()) for k, w in t64.items() if not k.endswith(skip) and w.numel())
    return (LIBRARY_FACTOR + 1) * max(_distance(t32, t64, skip) / U32, scale) * unit


def test_one_epoch_in_float64_is_torch_s_update(seed_runs):
    """The seed MLP in float64: the weights after 844 steps agree to float64 rounding, amplified as
    this trajectory amplifies a rounding. A formula that differs by one part in 10^8 anywhere (Keras'
    lr and momentum left in float32, say) lands outside."""
    t32, t64, k64 = (seed_runs[b, d] for b, d in (("torch", "float32"), ("torch", "float64"), ("keras", "float64")))
    bound = _rounding_bound(t32, t64, U64)
    assert _distance(k64, t64) <= bound, (_distance(k64, t64), bound)
    assert bound < 1e-6  # tight enough to mean something: the weights are O(0.3)


def test_one_epoch_in_float32_agrees_with_torch(tmp_path, fashion_available_module):
    """The seed's hyper-parameters in float32, with tanh for ReLU: both backends within the float32
    bound of this trajectory.

    tanh because float32 rounding moves a ReLU trajectory by jumps: when a rounding carries one of
    its 844 * 64 * 128 pre-activations across 0, that unit's gradient switches on or off and the
    weights step apart by up to lr * |x_i| * |delta_i| / 64, not by A * U32. With pre-activations of
    order 1, each lands within float32 rounding (~1e-7) of 0 with probability ~1e-7, so ~0.7 such
    crossings are expected per epoch: a coin toss per machine. Measured on a 2-core AMD EPYC at one
    thread, the torch float32 run stayed within 3e-7 of float64 for 500 steps and was 2.8e-3 away
    by step 600 (1.7e-2 after the epoch); at two threads, 3.5e-7. tanh is smooth, so d32 / U32 is the
    amplification _rounding_bound needs: A = 12 at one thread and at two there, Keras 1.0e-6 from
    torch against a bound of 5.7e-6 to 6.0e-6. (The float64 tests keep ReLU: at 2^-53 a crossing is
    ~1e-9 likely, and one in their float32 reference only widens their bound.)"""
    weights = {}
    for backend, dtype in (("torch", "float32"), ("torch", "float64"), ("keras", "float32")):
        cfg = load_config(SEED_MLP, ["model.activation=tanh", f"train.backend={backend}", f"train.dtype={dtype}",
                                     "train.epochs=1", "train.progress=none", "train.final=last"])
        weights[backend, dtype] = _weights(train(cfg, out=tmp_path / f"{backend}-{dtype}").model.state_dict())
    t32, t64, k32 = (weights[b, d] for b, d in (("torch", "float32"), ("torch", "float64"), ("keras", "float32")))
    bound = _rounding_bound(t32, t64, U32)
    assert _distance(k32, t32) <= bound, (_distance(k32, t32), bound)
    assert bound < 1e-3  # tight enough to mean something: the weights are O(0.3)


def test_ten_epochs_reach_torch_s_test_accuracy(seed_runs):
    """The seed config, 10 epochs on each backend: test accuracy within 0.5 points (the issue's bar),
    and metrics.jsonl rows of the same keys."""
    torch_run, keras_run = seed_runs["torch", "ten_epochs"], seed_runs["keras", "ten_epochs"]
    accuracy = {name: run.metrics["test"]["accuracy"] for name, run in (("torch", torch_run), ("keras", keras_run))}
    assert abs(accuracy["keras"] - accuracy["torch"]) <= 0.005, accuracy
    rows = [[json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
            for run in (torch_run, keras_run)]
    assert len(rows[0]) == len(rows[1]) == 10 and [set(r) for r in rows[0]] == [set(r) for r in rows[1]]


def _float64_gap(tmp_path, overrides: list[str], config=SEED_MLP) -> tuple[float, float]:
    """(max |w_keras - w_torch| of the trainable weights after a float64 run of the seed config with
    `overrides`, the float64 rounding bound of that trajectory). The running variances are left out:
    torch keeps the unbiased batch variance, Keras the biased one (training uses neither)."""
    weights = {}
    for backend, dtype in (("torch", "float32"), ("torch", "float64"), ("keras", "float64")):
        cfg = load_config(config, [*overrides, "train.progress=none", "train.final=last",
                                     f"train.backend={backend}", f"train.dtype={dtype}"])
        weights[backend, dtype] = _weights(train(cfg, out=tmp_path / f"{backend}-{dtype}").model.state_dict())
    stats = ("running_var", "running_mean", "num_batches_tracked")
    bound = _rounding_bound(weights["torch", "float32"], weights["torch", "float64"], U64, stats)
    return _distance(weights["keras", "float64"], weights["torch", "float64"], stats), bound


def test_cnn_with_batch_norm_l2_and_a_schedule_is_torch_s_update(tmp_path, fashion_available_module):
    """LeNet with batch norm, L2 and a cosine schedule with warm-up, in float64 on 500 images: the
    trainable weights after an epoch (torch's lr schedule setting Keras' lr every step) agree to
    float64 rounding, bounded as above from this trajectory's float32 run. Plain SGD: with momentum,
    Keras' velocity carries past lrs (v = 0.9 v - lr g) where torch's carries past gradients, so the
    two differ once the lr moves (docs/keras.md)."""
    gap, bound = _float64_gap(tmp_path, [
        "data.limit=500", "eval.limit=200", "model.name=cnn", "model.batch_norm=true", "regularize.l2=0.001",
        "optim.lr=0.03125", "optim.momentum=0", "schedule.name=cosine", "schedule.warmup_epochs=0.5",
        "train.epochs=1"])
    assert gap <= bound, (gap, bound)


def test_resnet_twin_is_torch_s_update(tmp_path, fashion_available_module):
    """A CIFAR ResNet (depth 8: a stem and one basic block per stage, two with a projection shortcut,
    stride-2 convolutions, global average pooling) on 300 Fashion-MNIST images, 1 epoch in float64:
    the trainable weights agree to float64 rounding, bounded from this trajectory's float32 run."""
    gap, bound = _float64_gap(tmp_path, [
        "data.limit=300", "eval.limit=100", "model.name=resnet", "model.depth=8", "model.width=8",
        "optim.momentum=0.9", "optim.lr=0.05", "train.epochs=1"])
    assert gap <= bound, (gap, bound)


@pytest.mark.parametrize("task", [["data.name=breast_cancer", "loss.name=bce_with_logits"],  # one logit
                                  ["loss.name=mse"],          # the seed's MSE: softmax against one-hot (wine)
                                  ["data.name=diabetes"]])    # regression on standardised targets
def test_the_other_losses_are_torch_s(tmp_path, task):
    """Each loss but cross-entropy, on a scikit-learn table: 5 epochs of SGD with momentum in float64,
    the weights within the float64 rounding bound of the trajectory (no dropout: Keras draws its own masks)."""
    gap, bound = _float64_gap(tmp_path, [*task, "model.dropout=0", "optim.name=sgd", "optim.lr=0.05",
                                         "optim.momentum=0.9", "train.epochs=5"], ROOT / "examples/wine_tabular.yaml")
    assert gap <= bound, (gap, bound)


def test_interrupted_keras_run_resumes_to_the_same_numbers(tmp_path):
    """Ctrl-C mid-epoch, then --resume: the same metrics as the uninterrupted run (Keras' optimiser
    variables and dropout RNG come back from last.pt), and best.keras loads in Keras alone."""
    cfg = quick_config(model={"hidden": [32], "dropout": 0.2}, train={"backend": "keras", "epochs": 3},
                       optim={"name": "adam", "lr": 0.003})
    reference = train(cfg, out=tmp_path / "reference")
    again = train(cfg, out=tmp_path / "again")
    assert again.metrics == reference.metrics  # reproducible: same config and seed, same numbers
    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "cut", on_step_end=ctrl_c_at(2, 7))
    resumed = train(None, resume=tmp_path / "cut")
    assert resumed.metrics == reference.metrics
    timeless = [[{k: v for k, v in row.items() if k != "seconds"} for row in run.history]
                for run in (resumed, reference)]
    assert timeless[0] == timeless[1] and len(timeless[0]) == 3

    import keras
    native = keras.saving.load_model(reference.run_dir / "checkpoints" / "best.keras")
    trained = load_run(reference.run_dir)  # the torch model of the config, holding best.pt's weights
    twin = trained.model
    x = np.random.default_rng(0).standard_normal((5, *trained.splits.input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    # float32 logits of a 64-32-10 net: |error| <= 64 * U32 * sum|w||x| per layer; 1e-4 is far above that
    np.testing.assert_allclose(native.predict(x, verbose=0), expected, atol=1e-4)


def test_evaluate_and_report_read_a_keras_run(tmp_path, capsys):
    """A keras run's best.pt holds the weights in the torch model's names and layouts: evaluate
    scores it with the torch twin, matching the test metrics Keras computed within float32 rounding."""
    cfg = quick_config(train={"backend": "keras", "epochs": 2})
    result = train(cfg, out=tmp_path / "run")
    scored = evaluate(result.run_dir, split="test", report=False)
    # The same weights, two frameworks' float32 forward passes: the mean loss moves by at most the
    # logits' difference (cross-entropy is 2-Lipschitz in the max-norm of the logits), far under 1e-4.
    assert abs(scored["log_loss"] - result.metrics["test"]["loss"]) < 1e-4
    # a digit whose two best logits are within rounding of each other may flip: one at most
    assert abs(scored["accuracy"] - result.metrics["test"]["accuracy"]) <= 1 / scored["n_examples"]
    done = run_main(capsys, "report", result.run_dir)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("override, key", [
    ("model.name=mymodels:Net", "model.name=mymodels:Net"),
    ("loss.label_smoothing=0.1", "loss.label_smoothing"),
    ("optim.weight_decay=0.01", "optim.weight_decay"),
    ("train.accumulate=2", "train.accumulate"),
    ("train.compile=true", "train.compile"),
])
def test_keys_keras_cannot_do_exit_2_naming_them(tmp_path, capsys, override, key):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(quick_config(train={"backend": "keras"})))
    done = run_main(capsys, "train", "-c", cfg_file, override, "--out", tmp_path / "run")
    assert done.returncode == 2 and key in done.stderr and "train.backend=torch" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_another_keras_backend_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ConfigError, match="KERAS_BACKEND=jax"):
        train(quick_config(train={"backend": "keras"}), out=tmp_path / "run")


def test_compare_the_two_frameworks(tmp_path):
    """`trainlab compare --vary train.backend=torch,keras`: both frameworks' runs, in compare.json and the report."""
    from trainlab.compare import compare
    cmp = compare(quick_config(), {"train.backend": ["torch", "keras"]}, seeds=2, out=tmp_path / "cmp")
    labels = [setting["label"] for setting in cmp["settings"]]
    assert labels == ["train.backend=torch", "train.backend=keras"], labels
    for setting in cmp["settings"]:
        assert len(setting["run_dirs"]) == 2
    keras_runs = list((tmp_path / "cmp").glob("02-*/seed-*/checkpoints/best.keras"))
    assert len(keras_runs) == 2  # trained by Keras, not by a torch pack
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "train.backend=torch" in page and "train.backend=keras" in page


def test_a_keras_run_exports_and_predicts(tmp_path, capsys):
    """A keras run's checkpoint exports as ONNX and as a SavedModel (its Keras twin), each checked on
    the test split within the float32 bound, and `predict --onnx` gives the classes `predict` gives."""
    from trainlab.export import export
    cfg = quick_config(train={"backend": "keras", "epochs": 2})
    run = train(cfg, out=tmp_path / "run").run_dir
    for fmt in ("onnx", "saved_model"):
        result = export(run, fmt)
        assert result["max_difference"] <= min(result["bound"], 1e-5), result  # the 1e-5 round trip
    from PIL import Image

    from trainlab.predict import predict
    images = tmp_path / "digits"
    images.mkdir()
    for i, digit in enumerate(load_run(run).splits.test.x[:40]):  # (1, 8, 8) on digits' 0..16 scale
        Image.fromarray((digit[0].numpy() * 255 / 16).round().astype(np.uint8)).save(images / f"{i:02d}.png")
    plain = predict(run, images)
    onnx = predict(run, images, onnx=run / "export" / "model.onnx")
    assert len(plain) == len(onnx) == 40
    for a, b in zip(plain, onnx):  # the same class, but where the two most likely are within 2e-5 of a tie
        top2 = sorted(a["probabilities"].values())[-2:]
        assert a["predicted"] == b["predicted"] or top2[1] - top2[0] <= 2e-5, (a, b)


def test_search_and_cv_train_keras_configs(tmp_path):
    """search and cv train a keras config as train() does (one run per trial or fold, never a torch pack)."""
    from trainlab.crossval import cross_validate
    from trainlab.search import search
    cfg = quick_config(train={"backend": "keras", "epochs": 1})
    result = search(cfg, {"optim.lr": {"choice": [0.02, 0.05]}}, out=tmp_path / "search", quiet=True)
    assert result["trials"] == 2
    assert len(list((tmp_path / "search").rglob("best.keras"))) == 2
    cv = cross_validate(cfg, folds=3, out=tmp_path / "cv")
    assert len(cv["folds"]) == 3 and all(0.5 < v <= 1 for v in cv["folds"])  # digits: far above chance (0.1)
    assert len(list((tmp_path / "cv").rglob("best.keras"))) == 3


def test_lr_find_steps_keras_from_the_same_start(tmp_path):
    """lr-find on a keras config: Keras takes the steps, with torch's exponential lr ramp. Its losses
    follow the torch backend's while the lr is small (the first 100 of 200 steps reach lr 3e-4 from
    1e-7): the weights have hardly moved, so the two differ by the float32 rounding of a forward pass
    of 32 digits through 64-32-10 (|error| <= 64 * 2^-24 * sum|w||x| per layer, about 1e-5 here), far
    under 1e-4. Plain SGD: with momentum the ramp itself separates them (measured 0.015 by step 100),
    since Keras' velocity carries the past lrs where torch's buffer carries the past gradients."""
    from trainlab.lrfind import lr_find
    found = {backend: lr_find(quick_config(train={"backend": backend}, optim={"momentum": 0.0}), steps=200,
                              out=tmp_path / backend) for backend in ("torch", "keras")}
    gap = np.abs(np.array(found["keras"]["loss"][:100]) - np.array(found["torch"]["loss"][:100])).max()
    assert gap < 1e-4, gap
    assert found["keras"]["lr"] == found["torch"]["lr"]  # the same ramp, torch's scheduler on both
