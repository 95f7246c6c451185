"""Faults of resources: a disk that fills up mid-run (or a file-size limit) and a model or batch
that cannot fit in memory. Each is a clear error with exit code 2, never a traceback, and nothing
is lost: the previous checkpoint stays whole and `--resume` ends like an uninterrupted run."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainlab import data, losses
from trainlab.cli import main
from trainlab.config import build_config, load_config
from trainlab.errors import DiskFull
from trainlab.memory import estimate
from trainlab.train import train

from conftest import GPU_EXAMPLES, ROOT, TEXT_FOLDER_EXAMPLES, quick_config

# digits, 36 steps of 32 per epoch: the first last.pt after epoch 1's is the one at step 40 (epoch
# 2, step 4), a mid-epoch checkpoint, so the disk filled after epoch 1 refuses a last.pt first.
CONFIG = quick_config(train={"epochs": 3, "checkpoint_every": 10})
CLI_CONFIG = ["data.name=digits", "data.val_fraction=0.2", "model.hidden=[32]", "train.epochs=1",
              "train.progress=none"]


def _rows(result) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    return train(build_config(CONFIG), out=tmp_path_factory.mktemp("disk") / "reference")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root: CI and `make setup` run as root), lazily unmounted after the test (this
    process keeps the lock of the last run directory it opened); None where mounting fails."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves at most `leave` bytes free on `disk` (tmpfs counts 4 KiB pages)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
            f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


def _sizes(message: str) -> tuple[int, int]:
    found = re.search(r"The write needed ([\d,]+) bytes; '.*' has ([\d,]+) bytes free", message)
    assert found, message
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def test_a_disk_that_fills_mid_run_keeps_last_pt_and_resume_ends_like_the_uninterrupted_run(
        small_disk, tmp_path, uninterrupted):
    if small_disk is None:  # no tmpfs here: the file-size limit (EFBIG) stands in, in a child process
        return _file_size_limit_run(tmp_path, uninterrupted)
    out = small_disk / "run"
    last = out / "checkpoints" / "last.pt"
    before = {}

    def fill_after_epoch_1(epoch, row):
        if epoch == 1:
            before["last.pt"] = last.read_bytes()
            # Leave half a checkpoint free: the next last.pt holds the same tensors and more (see
            # below), so it needs more than twice what is left.
            before["filler"] = _fill(small_disk, len(before["last.pt"]) // 2)

    with pytest.raises(DiskFull) as err:
        train(build_config(CONFIG), out=out, on_epoch_end=fill_after_epoch_1)
    message = str(err.value)
    assert err.value.exit_code == 2
    assert f"Cannot write '{last}': the disk is full" in message
    needed, free = _sizes(message)
    # needed: the mid-epoch last.pt, the epoch-1 one's tensors plus the epoch's running totals and the
    # augmentation generator's 5 kB state (here 24.9 kB and 36.7 kB), so between 1x and 2x the epoch-1
    # file; free: what the filler left, half a checkpoint give or take one 4 KiB tmpfs page.
    assert len(before["last.pt"]) <= needed < 2 * len(before["last.pt"])
    assert free < needed and free <= len(before["last.pt"]) // 2 + 4096
    assert "The previous last.pt is intact" in message and f"trainlab train --resume {out}" in message
    assert last.read_bytes() == before["last.pt"]             # epoch 1's checkpoint, byte for byte
    assert not list(last.parent.glob(".*.tmp"))               # the partial temp file is gone

    before["filler"].unlink()
    resumed = train(None, resume=out)
    assert resumed.metrics == uninterrupted.metrics
    assert _rows(resumed) == _rows(uninterrupted)


def test_the_cli_says_which_file_did_not_fit_and_exits_2(small_disk, capsys):
    if small_disk is None:
        pytest.skip("no tmpfs here: the file-size limit test covers the CLI")  # never in CI (root)
    _fill(small_disk, 0)
    assert main(["train", *CLI_CONFIG, "--out", str(small_disk / "cli")]) == 2
    err = capsys.readouterr().err
    assert f"Cannot write '{small_disk / 'cli' / 'config.yaml'}': the disk is full" in err
    assert "No config.yaml was written" in err and "run the command again" in err and "Traceback" not in err


# The child process of the file-size limit: ulimit -f (RLIMIT_FSIZE) makes a write past the limit
# fail with EFBIG (Python ignores SIGXFSZ). After epoch 1 it lowers the limit to half that epoch's
# last.pt; then, lower still (a config.yaml is 1.7 kB), it runs the CLI.
_LIMITED = r"""
import hashlib, json, resource, sys
from pathlib import Path
from trainlab.cli import main
from trainlab.errors import DiskFull
from trainlab.train import train
config, out, cli_out = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
last, seen = out / "checkpoints" / "last.pt", {}
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
def limit(epoch, row):
    if epoch == 1:
        seen["size"], seen["sha"] = last.stat().st_size, hashlib.sha256(last.read_bytes()).hexdigest()
        resource.setrlimit(resource.RLIMIT_FSIZE, (seen["size"] // 2, hard))
try:
    train(config, out=out, on_epoch_end=limit)
    sys.exit("trained past the limit")
except DiskFull as e:
    seen["message"], seen["code"] = str(e), e.exit_code
resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
seen["cli"] = main(["train", *sys.argv[4:], "--out", cli_out])
print(json.dumps(seen))
"""


def _file_size_limit_run(tmp_path: Path, uninterrupted) -> None:
    out, cli_out = tmp_path / "limited", tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-c", _LIMITED, json.dumps(CONFIG), str(out), str(cli_out), *CLI_CONFIG],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    last = out / "checkpoints" / "last.pt"
    message = seen["message"]
    assert seen["code"] == 2 and f"Cannot write '{last}': the file would exceed" in message
    needed, free = _sizes(message)
    assert seen["size"] <= needed < 2 * seen["size"]   # the mid-epoch last.pt: see the tmpfs test
    assert "The previous last.pt is intact" in message and f"trainlab train --resume {out}" in message
    assert hashlib.sha256(last.read_bytes()).hexdigest() == seen["sha"] and not list(last.parent.glob(".*.tmp"))
    assert seen["cli"] == 2 and "Cannot write" in proc.stderr and "config.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    resumed = train(None, resume=out)
    assert resumed.metrics == uninterrupted.metrics and _rows(resumed) == _rows(uninterrupted)


def test_a_file_size_limit_is_refused_like_a_full_disk(tmp_path, uninterrupted):
    """EFBIG (ulimit -f), and the fallback of the tmpfs test where mounting is not possible."""
    _file_size_limit_run(tmp_path, uninterrupted)


# ---------------------------------------------------------------- memory

_LOADED: dict[str, data.Splits] = {}


def _estimate(cfg, splits=None):
    if splits is None:  # examples that share a data section share one load (Fashion-MNIST takes a second)
        key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
        splits = _LOADED.setdefault(key, data.load(cfg)) if key not in _LOADED else _LOADED[key]
    name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    n_out = losses.num_outputs(name, splits.task, splits.num_classes)
    t0 = time.perf_counter()
    found = estimate(cfg, splits, n_out, torch.device("cpu"))
    return found, time.perf_counter() - t0


def _cifar_shaped(cfg, fashion: data.Splits) -> data.Splits:
    """CIFAR-10 cannot be downloaded on CI: its shapes (45,000 / 5,000 / 10,000 3x32x32 uint8 images,
    10 classes) as zero-stride views, which cost no memory; the estimate reads only shapes and dtypes."""
    from dataclasses import replace
    from trainlab.data import ArraySplit

    def split(n):
        return ArraySplit(torch.zeros(1, 3, 32, 32, dtype=torch.uint8).expand(n, 3, 32, 32),
                          torch.zeros(1, dtype=torch.long).expand(n))

    return replace(fashion, train=split(45000), val=split(5000), test=split(10000), input_shape=(3, 32, 32),
                   mean=[0.5] * 3, std=[0.25] * 3)


def test_every_example_config_fits_and_the_estimate_is_cheap(fashion_available, text_folder):
    """The check never refuses a shipped example on this machine, and counts at least the weights."""
    fashion = None
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        folder = [f"data.path={text_folder}"] if path.name in TEXT_FOLDER_EXAMPLES else []
        cfg = load_config(path, GPU_EXAMPLES.get(path.name, []) + folder)  # a GPU recipe at the width the CPU suite runs
        splits = None
        if cfg.data.name.startswith("cifar"):
            fashion = fashion or data.load(load_config(ROOT / "examples/seed_mlp.yaml"))
            splits = _cifar_shaped(cfg, fashion)
        found, seconds = _estimate(cfg, splits)
        weights = found.parameters * 4  # float32
        assert weights <= found.parts["parameters"] < found.total < found.available, (path.name, found)
        assert found.parts["activations"] > 0 and found.parts["gradients"] == weights
        # 2-6 ms each here (2 busy cores); 0.5 s would mean torch's Python meta kernels ran (1-2 s).
        assert seconds < 0.5, (path.name, seconds)


def test_the_meta_forward_sees_the_shapes_of_the_real_one():
    """The estimate's shape rules against a real forward pass, module by module, for every built-in family."""
    from trainlab.config import ModelConfig
    from trainlab.memory import MetaShapes, leaf_outputs
    from trainlab.models import build_model

    cases = [(dict(name="mlp", hidden=[64, 32], batch_norm=True, dropout=0.2, activation="silu"), (13,), 3),
             (dict(name="cnn", channels=[6, 16], batch_norm=True, dropout=0.3, activation="tanh"), (3, 32, 32), 7),
             (dict(name="cnn", channels=[6, 16]), (1, 8, 8), 10),
             (dict(name="resnet", depth=8, width=8, dropout=0.1), (3, 32, 32), 10),
             (dict(name="gpt", n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.1), (16,), 50),
             (dict(name="gpt", n_layer=1, n_head=2, n_embd=32, block_size=16, rope=True, bias=False), (16,), 50)]
    for kwargs, shape, n_out in cases:
        cfg = ModelConfig(**kwargs)
        ids = cfg.name == "gpt"
        batch = (4, cfg.block_size) if ids else (4, *shape)
        dtype = torch.long if ids else torch.float32
        with torch.device("meta"), MetaShapes():
            meta = build_model(cfg, shape, n_out)
        real = build_model(cfg, shape, n_out)
        assert leaf_outputs(meta, torch.empty(batch, dtype=dtype, device="meta")) == \
            leaf_outputs(real, torch.zeros(batch, dtype=dtype)), kwargs


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("overrides, names", [
    # 64 -> 200,000 -> 200,000 -> 10: 4.0e10 parameters, 149 GiB of float32, as much again in gradients.
    (["data.name=digits", "model.hidden=[200000,200000]"], "model.hidden"),
    # A GPT of 48 layers 16,384 wide: 12 x 48 x 16,384^2 = 1.5e11 parameters, 3 x 580 GiB with AdamW.
    (["-c", "examples/shakespeare_char.yaml", "model.n_layer=48", "model.n_embd=16384", "model.n_head=16"],
     "model.n_embd"),
])
def test_a_model_that_cannot_fit_exits_2_naming_parameters_before_allocating(tmp_path, capsys, overrides, names):
    rss, t0 = _peak_rss(), time.perf_counter()
    code = main(["train", *overrides, "train.progress=none", "--out", str(tmp_path / "run")])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert "does not fit in memory" in err and "parameters" in err and "available (" in err and names in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    # Nothing of the model was allocated: the peak RSS grew by far less than one layer of it (16 GiB
    # for the MLP's second layer), and the refusal took seconds, not the minutes of an allocation.
    assert _peak_rss() - rss < 1 << 30 and seconds < 30


def test_a_batch_that_cannot_fit_exits_2_naming_activations(tmp_path, capsys, fashion_available):
    # 2,048 feature maps of 28x28 per image, 3 maps per conv block (conv, relu, pool/4): 2,048 x 784 x
    # 4 bytes x 2.25 = 14 MiB per image, x 2 for backward, x 54,000 images (the whole training split,
    # the largest batch there is) = 1.4 TiB of activations against a few MiB of weights.
    code = main(["train", "-c", "examples/fashion_cnn.yaml", "model.channels=[2048,16]", "train.batch_size=60000",
                 "train.progress=none", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "activations" in err and "54000-example batch" in err and "train.batch_size=" in err
    assert "train.accumulate=" in err and "Traceback" not in err
