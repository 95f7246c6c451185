"""`trainlab check`: works on every example, rejects bad input as `train` does, writes nothing without --out."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from trainlab.check import check, format_check, summarize
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.data import idx
from trainlab.data.locate import data_roots
from trainlab.models import build_model

from conftest import FASHION, GPU_EXAMPLES, ROOT, TEXT_FOLDER_EXAMPLES, run_cli, run_main, truncated_fashion_root

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SEED = ROOT / "examples/seed_mlp.yaml"
WINE = ROOT / "examples/wine_tabular.yaml"


def _last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main_error(capsys, code, args, *words):
    """The CLI in-process (no interpreter start per case): exit code and a one-paragraph error."""
    assert main(["check", *map(str, args)]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err, err
    for word in words:
        assert word in err, err


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def cifar_shaped_folder(tmp_path_factory):
    """Real Fashion-MNIST test images as a folder of 32x32 RGB PNGs, 12 per class (as test_examples does):
    CIFAR-10 cannot be downloaded offline, so cifar_resnet.yaml is also checked on this CIFAR-shaped set."""
    assert (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), "run make setup (Fashion-MNIST)"
    images = idx.read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    labels = idx.read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    root = tmp_path_factory.mktemp("cifar_shaped")
    for cls in range(10):
        folder = root / f"class{cls}"
        folder.mkdir()
        for i in np.flatnonzero(labels == cls)[:12]:
            Image.fromarray(np.repeat(np.pad(images[i], 2)[:, :, None], 3, axis=2)).save(folder / f"{i}.png")
    return root


def _check_ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc)
    model, timing, data = result["model"], result["timing"], result["data"]
    assert model["params"] == sum(r["params"] for r in model["layers"]) > 0
    assert model["macs_per_example"] == sum(r["macs"] for r in model["layers"]) > 0
    # A held-out split to score on: test, or for a text split by position with no test part, val.
    assert data["splits"]["train"] > 0 and (data["splits"]["test"] or data["splits"]["val"]) > 0
    assert timing["seconds_per_step"] > 0 and timing["run_seconds"] > timing["epoch_seconds"] > 0
    assert "parameters" in proc.stdout and "per step" in proc.stdout  # the text came before the JSON line
    return result


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_works_on_every_example(example, capsys, fashion_available, cifar_shaped_folder, text_folder,
                                      monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path))  # no neighbour table cached yet
    if example.name != "cifar_resnet.yaml":
        pretrain = ["--pretrain"] if "pretrain" in example.name else []  # what `trainlab pretrain` would do
        folder = [f"data.path={text_folder}"] if example.name in TEXT_FOLDER_EXAMPLES else []
        result = _check_ok(run_main(capsys, "check", "-c", example, *GPU_EXAMPLES.get(example.name, []), *folder,
                                       "--steps", "3", "--json", *pretrain))
        # A step budget (the language models) is counted in evaluation periods, not epochs.
        periods = result["timing"]["step_budget"] is not None
        text = format_check(result)
        assert ("evaluation period ~" in text) == periods and ("epoch ~" in text) != periods
        if load_config(example).pretrain.positives == "neighbours" and pretrain:
            # The search is estimated, not run (a minute for 54,000 images), and counted in the run's time.
            timing = result["timing"]
            assert not timing["neighbours_cached"] and timing["neighbour_search_seconds"] > 0
            assert "neighbour search ~" in text and not list(tmp_path.iterdir())
        return
    if any((root / "cifar10").is_dir() for root in data_roots()):
        _check_ok(run_main(capsys, "check", "-c", example, "--steps", "3", "--json"))
    else:  # not installed here: the honest answer is exit 3 naming what is missing and where it was sought
        _main_error(capsys, 3, ["-c", example, "data.download=false"], "Dataset 'cifar10' not found",
                    "cifar-10-python.tar.gz", str(data_roots()[0] / "cifar10"))
    # The example's ResNet, augmentation, optimiser and schedule on a CIFAR-shaped folder (smaller batches).
    proc = run_main(capsys, "check", "-c", example, "data.name=imagefolder", f"data.path={cifar_shaped_folder}",
                       "data.image_size=32", "train.batch_size=32", "eval.batch_size=64", "--steps", "3", "--json")
    result = _check_ok(proc)
    assert result["model"]["params"] == 272474  # ResNet-20 of width 16 on 10 classes
    assert result["data"]["input_shape"] == [3, 32, 32] and result["data"]["stream"]


def test_seed_mlp_parameters_and_macs_from_the_arithmetic(fashion_available):
    cfg = load_config(SEED)
    result = check(cfg, steps=2)
    model = result["model"]
    torch.manual_seed(0)
    assert model["params"] == sum(p.numel() for p in build_model(cfg.model, (1, 28, 28), 10).parameters()) == 101770
    assert model["macs_per_example"] == 784 * 128 + 128 * 10
    assert [(r["type"], r["output_shape"]) for r in model["layers"]] == [
        ("Flatten", [784]), ("Linear", [128]), ("ReLU", [128]), ("Linear", [10])]
    assert result["data"]["source"] == str(FASHION) and result["data"]["splits"] == {
        "train": 54000, "val": 6000, "test": 10000}
    assert result["config"]["diff"]["optim.momentum"] == {"value": 0.9, "default": None}
    assert "optim.lr" not in result["config"]["diff"]  # 0.01 is the default
    timing = result["timing"]
    assert timing["steps_per_epoch"] == 844 and timing["steps_timed"] == 2 and timing["val_batches"] == 6
    assert timing["epoch_seconds"] == pytest.approx(844 * timing["seconds_per_step"] + timing["val_seconds"])
    text = format_check(result)
    assert "101,770 parameters" in text and "101,632 multiply-accumulates per example" in text


def test_conv_macs_are_out_elements_times_in_per_group_times_kernel():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 7 * 7, 5))
    summary = summarize(model, (4, 16, 16))
    conv, bn, relu, pool, flat, fc = summary["layers"]
    assert conv["output_shape"] == [8, 14, 14] and conv["macs"] == 8 * 14 * 14 * (4 // 2) * 3 * 3
    assert fc["macs"] == 8 * 7 * 7 * 5 and bn["macs"] == relu["macs"] == pool["macs"] == 0
    assert summary["macs_per_example"] == conv["macs"] + fc["macs"] and summary["unattributed_macs"] == 0
    assert bn["params"] == 16 and model.training and model[1].training  # training modes restored


def test_rejects_bad_config_like_train(tmp_path, capsys):
    _main_error(capsys, 2, ["-c", SEED, "optim.lrr=0.1"], "optim.lrr", "Did you mean 'optim.lr'?")
    _main_error(capsys, 2, ["-c", SEED, "model.dropout=1.5"], "model.dropout", "1.5")
    _main_error(capsys, 2, ["-c", tmp_path / "missing.yaml"], "missing.yaml")
    _main_error(capsys, 2, [], "-c CONFIG")
    _main_error(capsys, 2, ["-c", WINE, "--steps", "0"], "--steps")
    # What train() would only find out at the end of its first epoch, check finds before training.
    _main_error(capsys, 2, ["-c", WINE, "data.val_fraction=0"], "train.monitor=val.loss", "data.val_fraction=0")
    _main_error(capsys, 2, ["-c", WINE, "train.monitor=val.rmse"], "val.rmse", "val.accuracy")


def test_missing_dataset_exits_3_listing_roots_and_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    _main_error(capsys, 3, ["-c", SEED, "data.name=kmnist", "data.download=false"],
                str(tmp_path / "empty" / "kmnist"), "train-images-idx3-ubyte.gz")


def test_truncated_data_file_exits_3_naming_it(tmp_path, capsys, fashion_available):
    root, broken = truncated_fashion_root(tmp_path, fashion_available)
    _main_error(capsys, 3, ["-c", SEED, "--data-dir", root], str(broken))


def test_writes_nothing_without_out_and_check_json_with_it(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}  # ~/.cache included in what must stay unchanged
    before = _files(tmp_path)
    proc = run_cli("check", "-c", WINE, "--steps", "2", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path) == before == ["home"]
    assert _last_json(proc)["out"] is None

    assert main(["check", "-c", str(WINE), "--steps", "2", "--json", "--out", str(tmp_path / "out")]) == 0
    assert _files(tmp_path) == ["home", "out", "out/check.json"]
    written = json.loads((tmp_path / "out/check.json").read_text())
    assert written == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["out"] == str(tmp_path / "out/check.json")
    assert written["data"]["source"].startswith("scikit-learn") and written["data"]["splits"]["val"] == 28
