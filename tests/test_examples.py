"""Every file in examples/ runs end to end with --smoke, and streaming equals the device path."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab import data
from trainlab.config import build_config
from trainlab.data import idx
from trainlab.data.loader import make_batches
from trainlab.train import train

from conftest import FASHION, GPU_EXAMPLES, ROOT, TEXT_FOLDER_EXAMPLES, run_main

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CIFAR_EXAMPLES = {"cifar_resnet.yaml"}


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    """Real Fashion-MNIST test images as an ImageNet-style folder of 32x32 RGB PNGs (30 per class).

    CIFAR-10 cannot be downloaded on CI machines (no network): the CIFAR examples run on this
    CIFAR-shaped folder instead, which also exercises the streaming (imagefolder) path.
    """
    assert (FASHION / "t10k-images-idx3-ubyte.gz").is_file(), "run make setup (Fashion-MNIST)"
    images = idx.read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    labels = idx.read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    root = tmp_path_factory.mktemp("fashion_folder")
    for cls in range(10):
        folder = root / idx.CLASSES["fashion-mnist"][cls].replace("/", "-")
        folder.mkdir()
        for i in np.flatnonzero(labels == cls)[:30]:
            rgb = np.repeat(np.pad(images[i], 2)[:, :, None], 3, axis=2)
            Image.fromarray(rgb).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_with_smoke(example, tmp_path, fashion_available, fashion_folder, text_folder, capsys):
    extra = []
    if example.name in CIFAR_EXAMPLES:
        extra = ["data.name=imagefolder", f"data.path={fashion_folder}", "data.image_size=32"]
    if example.name in TEXT_FOLDER_EXAMPLES:
        extra = [f"data.path={text_folder}"]
    extra += GPU_EXAMPLES.get(example.name, [])
    command = "pretrain" if "pretrain" in example.name else "train"
    # The command line through cli.main in this process: torch and the data stack are imported once
    # for all the examples (tests/test_docs.py runs the shown commands the same way).
    done = run_main(capsys, command, "-c", example, *extra, "--smoke", "--json", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # Scored on test; a text split by position without a test part (nanoGPT's 90/10) on val.
    held_out = summary["metrics"].get("test") or summary["metrics"]["val"]
    assert summary["epochs_run"] >= 1 and "loss" in held_out


def test_streaming_gives_the_same_batches_as_device_resident(fashion_available):
    cfg = build_config({"data": {"name": "fashion-mnist", "limit": 3000, "loader": "stream", "workers": 0},
                        "regularize": {"augment": {"crop_padding": 2, "hflip": True}}})
    splits = data.load(cfg)
    args = (splits, "train", 256, torch.device("cpu"), torch.float32)
    streamed = make_batches(*args, cfg, train=True)
    resident = make_batches(*args, build_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"],
                                                                             "loader": "device"}}), train=True)
    assert streamed.stream and not resident.stream
    for (xs, ys), (xr, yr) in zip(streamed.epoch(0, 1), resident.epoch(0, 1)):
        assert torch.equal(ys, yr) and torch.equal(xs, xr)


def test_same_results_streamed_or_resident(tmp_path, fashion_available):
    base = {"data": {"name": "fashion-mnist", "limit": 2000, "workers": 0},
            "train": {"epochs": 2, "progress": "none"}}
    a = train(build_config({**base, "data": {**base["data"], "loader": "device"}}), out=tmp_path / "a")
    b = train(build_config({**base, "data": {**base["data"], "loader": "stream"}}), out=tmp_path / "b")
    assert a.metrics == b.metrics  # the same batches (checked above) and ops: bitwise, no tolerance


def test_imagefolder_trains_streamed_with_workers(tmp_path, fashion_folder):
    cfg = build_config({"data": {"name": "imagefolder", "path": str(fashion_folder), "image_size": 32,
                                 "workers": 2, "val_fraction": 0.2},
                        "model": {"name": "cnn", "channels": [8, 16]}, "optim": {"name": "adam", "lr": 0.003},
                        "train": {"epochs": 4, "batch_size": 32, "progress": "none"}})
    result = train(cfg, out=tmp_path / "r")
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # 10 classes, 192 training images: well above 0.1 chance. 60 test images: 0.667 here, train.seed
    # 0..4: 0.567..0.700 (34+ right), 0.3 is 18: a new seed's spread, which bounds another CPU's
    # rounding (a smaller perturbation), is far inside.
    assert result.metrics["test"]["accuracy"] > 0.3
