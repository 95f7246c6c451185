"""trainlab export: every format takes raw inputs and gives what the trained model gives; predict --onnx;
bad input exits with the documented codes."""

import copy
import functools
import json
import shutil
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import trainlab
from trainlab.cli import main
from trainlab.config import build_config, load_config
from trainlab.data import idx
from trainlab.evaluate import load_run
from trainlab.export import export
from trainlab.export.verify import bound

from conftest import FASHION, ROOT
from test_evaluate import fashion_run

# The bound on every round trip: |p_file - p_trained| <= 1e-5 per probability. The export's
# own bound (verify.bound) is 1e-6 to 4e-6 on these runs; 1e-5 is the contract a consumer relies on.
ROUND_TRIP = 1e-5
FORMATS = ("onnx", "pt2", "torchscript", "saved_model")


def _train(tmp_path_factory, name: str, raw: dict):
    out = tmp_path_factory.mktemp("export") / name
    trainlab.train(build_config(raw), out=out)
    return out


def _example(path: str, **overrides) -> dict:
    raw = yaml.safe_load((ROOT / path).read_text())
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The seed MLP on 2,000 Fashion-MNIST images, 2 epochs (shared with test_evaluate/test_predict)."""
    return fashion_run(tmp_path_factory)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """examples/fashion_cnn.yaml (conv, batch norm, max-pool, dense 120-84) for 1 epoch on 1,000 images,
    at LeNet-5's widths 6 and 16 instead of 16 and 32: the same layers, a quarter of the arithmetic.
    train() scores the first 1,000 test images (eval.limit), the export checks its own 1,000."""
    return _train(tmp_path_factory, "cnn", _example("examples/fashion_cnn.yaml", data={"limit": 1000},
                                                      model={"channels": [6, 16]}, eval={"limit": 1000},
                                                      train={"epochs": 1, "progress": "none"}))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export(run, fmt) once per module: (result, file) by (run, fmt); later tests reuse the files."""
    folder, done = tmp_path_factory.mktemp("files"), {}

    def get(run, fmt, **kw):
        if (run, fmt) not in done:
            out = folder / f"{run.name}.{fmt}"
            done[run, fmt] = export(run, fmt, out=out, **kw), out
        return done[run, fmt]
    return get


@functools.lru_cache(maxsize=None)
def _trained(run):
    return load_run(run)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """examples/wine_tabular.yaml for 8 epochs: 13 standardised chemical measurements, 3 cultivars."""
    return _train(tmp_path_factory, "wine", _example("examples/wine_tabular.yaml",
                                                       train={"epochs": 8, "progress": "none"}))


@pytest.fixture(scope="module")
def fashion_test():
    """The first 200 raw Fashion-MNIST test images (200, 1, 28, 28) uint8, read straight from the IDX files."""
    return idx.load("fashion-mnist", str(FASHION.parent), download=False).test.x[:200]


def _by_hand(run, pixels: torch.Tensor) -> np.ndarray:
    """The trained model's probabilities with the normalisation written out: (x / 255 - mean) / std."""
    trained = _trained(run)
    mean = torch.tensor(trained.splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(trained.splits.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return trained.model(((pixels.double() / 255 - mean) / std).float()).double().softmax(1).numpy()


def _consumer(fmt: str, path) -> callable:
    """The file loaded the way its consumers load it, without trainlab."""
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if fmt == "saved_model":  # a folder; TensorFlow alone reads it
        import tensorflow as tf
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda x: serve(tf.constant(x.numpy()))["probabilities"].numpy()
    with warnings.catch_warnings():  # torch 2.13: "torch.jit.load is deprecated", documented in docs/export.md
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path))
    return lambda x: module(x).detach().numpy()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_every_format_round_trips_on_raw_pixels(which, fmt, request, exported, fashion_test, one_thread):
    run = request.getfixturevalue(which)
    result, out = exported(run, fmt)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() else out.stat().st_size
    assert result["file"] == str(out) and size == result["bytes"]
    assert result["checked"]["examples"] == 1000 and result["checked"]["split"] == "test"
    assert result["input"] == {"name": "pixels", "dtype": "uint8", "shape": [1, 28, 28],
                               "range": "raw pixel values 0..255"}
    assert result["max_difference"] <= min(result["bound"], ROUND_TRIP)
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file
    # Independently of the export's own check: raw uint8 pixels in, at two batch sizes (the batch
    # dimension is dynamic), against the trained model with the normalisation written out here.
    run_file = _consumer(fmt, out)
    expected = _by_hand(run, fashion_test)
    got = np.concatenate([run_file(fashion_test[:1]), run_file(fashion_test[1:])])
    assert got.shape == (200, 10) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=ROUND_TRIP)
    # The same classes, but where the two most likely are within 2e-5 of a tie (1e-5 each way may flip it).
    top2 = np.sort(expected, 1)[:, -2:]
    assert ((got.argmax(1) == expected.argmax(1)) | (top2[:, 1] - top2[:, 0] <= 2 * ROUND_TRIP)).all()


def _png_folder(folder, pixels: torch.Tensor):
    folder.mkdir()
    for i, img in enumerate(pixels.numpy()):
        Image.fromarray(img[0], mode="L").save(folder / f"{i:03d}.png")
    return folder


def test_predict_onnx_gives_the_classes_predict_gives(mlp, exported, fashion_test, tmp_path, capsys, one_thread):
    _, onnx_file = exported(mlp, "onnx")
    folder = _png_folder(tmp_path / "shots", fashion_test[:40])
    assert main(["predict", str(mlp), str(folder), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["predict", str(mlp), str(folder), "--onnx", str(onnx_file), "--json"]) == 0
    via_onnx = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert via_onnx.keys() == plain.keys() == {"run_dir", "input", "predictions"}
    assert [p["input"] for p in via_onnx["predictions"]] == [p["input"] for p in plain["predictions"]]
    assert [p["predicted"] for p in via_onnx["predictions"]] == [p["predicted"] for p in plain["predictions"]]
    for a, b in zip(via_onnx["predictions"], plain["predictions"]):
        assert list(a["probabilities"]) == list(b["probabilities"])  # the run's class names, in order
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()),
                                   rtol=0, atol=ROUND_TRIP)


def test_table_run_takes_raw_feature_values(wine, exported, tmp_path, capsys, one_thread):
    from sklearn.datasets import load_wine
    bunch = load_wine()
    result, onnx_file = exported(wine, "onnx")
    assert result["input"]["name"] == "features" and result["input"]["shape"] == [13]
    assert result["max_difference"] <= min(result["bound"], ROUND_TRIP)
    assert result["checked"]["examples"] == 36  # the whole test split (20% of 178)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    raw = bunch.data.astype(np.float32)  # scikit-learn's values: proline ~ 300-1700, hue ~ 0.5-1.7
    got = session.run(None, {"features": raw})[0]
    # predict standardises the same raw values itself (from a CSV, as a user gives them).
    table = tmp_path / "wine.csv"
    table.write_text(",".join(bunch.feature_names) + "\n"
                     + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in raw))
    expected = trainlab.predict(wine, table)
    classes = [str(c) for c in bunch.target_names]
    np.testing.assert_allclose(got, [[p["probabilities"][c] for c in classes] for p in expected],
                               rtol=0, atol=ROUND_TRIP)
    # The normalisation is inside: raw values give a learnt model (0.977-0.983 of the 178 wines right,
    # train.seed 0-3), values standardised beforehand are standardised twice and every wine lands on
    # one cultivar (0.399, the largest class's share, for every seed).
    trained = _trained(wine)
    standardised = ((raw - trained.splits.extra["feature_mean"]) / trained.splits.extra["feature_scale"])
    assert (got.argmax(1) == bunch.target).mean() > 0.9
    twice = session.run(None, {"features": standardised.astype(np.float32)})[0].argmax(1)
    assert (twice == bunch.target).mean() < 0.5
    assert main(["predict", str(wine), str(table), "--onnx", str(onnx_file)]) == 0  # the terminal table
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["input", "predicted", "probability"] and len(lines) == 2 + len(raw)
    assert [line.split()[1] for line in lines[2:]] == [p["predicted"] for p in expected]


GPT = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.steps=10",
       "eval.every=10", "train.batch_size=8", "eval.limit=8", "train.progress=none"]


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "gpt"
    trainlab.train(load_config(ROOT / "examples/shakespeare_char.yaml", GPT), out=out)
    return out


def test_language_model_exports_token_ids_to_logits(gpt, tmp_path, capsys, one_thread):
    result = export(gpt, "onnx", out=tmp_path / "gpt.onnx", check=32)
    assert result["input"] == {"name": "tokens", "dtype": "int64", "shape": [32], "range": "token ids 0..64"}
    assert result["output"] == {"name": "logits", "dtype": "float32", "shape": [32, 65]}
    assert result["checked"]["examples"] == 32 and result["checked"]["split"] == "val"  # no test part
    assert result["max_difference"] <= min(result["bound"], ROUND_TRIP)
    trained = _trained(gpt)
    windows = trained.splits.val.ids[: 10 * 32].view(10, 32).long()
    session = ort.InferenceSession(str(tmp_path / "gpt.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": windows.numpy()})[0]
    with torch.no_grad():
        expected = trained.model(windows)
        exact = copy.deepcopy(trained.model).double()(windows)
    # The logits' bound is derived as the export's own (verify.bound): torch's float32 logits differ
    # from a float64 copy's by e (float32 rounding through the 2 blocks, measured), and onnxruntime
    # rounds the same operations in another order: within 4e + 16 U max|logit|.
    allowed = bound(float((expected.double() - exact).abs().max()), float(expected.abs().max()))
    assert np.abs(got - expected.numpy()).max() <= allowed
    top2 = np.sort(expected.numpy(), -1)[..., -2:]  # the same next token, but within 2 x allowed of a tie
    assert ((got.argmax(-1) == expected.argmax(-1).numpy()) | (top2[..., 1] - top2[..., 0] <= 2 * allowed)).all()
    # Tracing cannot follow the attention's mask choice: refused, naming the formats that work.
    _fails(["export", str(gpt), "--format", "torchscript"], capsys, 2, "model.name=gpt", "--format onnx or --format pt2")
    # A SavedModel rebuilds the network in Keras, which has no transformer twin in trainlab.
    _fails(["export", str(gpt), "--format", "saved_model"], capsys, 2, "model.name=gpt", "mlp, cnn, resnet", "--format onnx")


class BatchBranch(nn.Module):
    """A custom model whose forward depends on the batch size: tracing freezes the branch of its example
    (batch 2), so the traced file computes something else on larger batches. The check must catch it."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.big, self.small = nn.Linear(input_shape[0], num_outputs), nn.Linear(input_shape[0], num_outputs)

    def forward(self, x):
        return self.big(x) if x.shape[0] > 2 else self.small(x)


def _fails(argv, capsys, code: int, *words):
    assert main(argv) == code
    err = capsys.readouterr().err
    # The error is the last line; warnings may come before it (tracing says why it may not generalise).
    assert err.splitlines()[-1].startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_bad_input_is_a_clear_error(mlp, wine, exported, fashion_test, tmp_path_factory, tmp_path, capsys,
                                    one_thread):
    _fails(["export", str(mlp), "--format", "tflite"], capsys, 2, "Unknown export format 'tflite'",
           "onnx, pt2, torchscript, saved_model")
    _fails(["export", str(tmp_path / "nowhere")], capsys, 2, "does not exist")
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(mlp / "config.yaml", half / "config.yaml")  # a run killed before its first checkpoint
    _fails(["export", str(half)], capsys, 2, "has no checkpoint", "trainlab train --resume")
    _fails(["export", str(mlp), "--check", "0"], capsys, 2, "--check 0")

    shots = _png_folder(tmp_path / "shots", fashion_test[:2])
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("this is not a model\n")
    _fails(["predict", str(mlp), str(shots), "--onnx", str(not_onnx)], capsys, 3, str(not_onnx), "not an ONNX model")
    _fails(["predict", str(mlp), str(shots), "--onnx", str(tmp_path / "missing.onnx")], capsys, 2,
           "missing.onnx", "trainlab export")
    _, wine_onnx = exported(wine, "onnx")
    _fails(["predict", str(mlp), str(shots), "--onnx", str(wine_onnx)], capsys, 3, "another run", "[batch, 1, 28, 28]")

    # An export that disagrees with the trained model fails (exit 1) and leaves no file behind.
    branchy = _train(tmp_path_factory, "branchy", {"data": {"name": "iris"},
                                                   "model": {"name": "test_export:BatchBranch"},
                                                   "train": {"epochs": 1, "progress": "none"}})
    target = tmp_path / "out" / "branchy.pt"
    _fails(["export", str(branchy), "--format", "torchscript", "--out", str(target)], capsys, 1,
           "disagrees with the trained model", "Nothing was written")
    assert not target.exists() and not list(target.parent.glob("*"))
    _fails(["export", str(branchy), "--format", "pt2", "--out", str(target)], capsys, 2, "cannot be exported as pt2")
    assert not target.exists()
