"""Resume: an interrupted run (Ctrl-C mid-epoch, or a kill) ends with the same metrics as one
that was never interrupted: same step, optimiser, scheduler and RNG state."""

import json
import signal
import subprocess
import sys

import pytest
import torch

from trainlab import checkpoint
from trainlab.config import build_config
from trainlab.errors import Interrupted
from trainlab.train import train

from conftest import ROOT, ctrl_c_at, quick_config, wait_for

# Everything that carries state across steps: momentum, a warm-up + cosine schedule, dropout
# (global RNG), augmentation (its own generator) and shuffling.
STATEFUL = dict(
    model={"hidden": [64], "dropout": 0.2},
    optim={"name": "sgd", "lr": 0.05, "momentum": 0.9},
    schedule={"name": "cosine", "warmup_epochs": 0.5},
    regularize={"augment": {"crop_padding": 1, "hflip": True, "noise": 0.05}},
    train={"epochs": 3, "batch_size": 32},
)


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    cfg = build_config(quick_config(**STATEFUL))
    reference = train(cfg, out=tmp_path / "reference")

    interrupt = ctrl_c_at(2, 7)

    with pytest.raises(Interrupted) as err:
        train(cfg, out=tmp_path / "cut", on_step_end=interrupt)
    assert err.value.exit_code == 130 and "epoch 2 step 7" in str(err.value)
    saved = checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (saved["progress"]["epoch"], saved["progress"]["step"]) == (2, 7)
    assert len(_read_rows(tmp_path / "cut")) == 1  # epoch 1 done, epoch 2 in progress

    steps_seen = []
    resumed = train(None, resume=tmp_path / "cut", on_step_end=lambda e, s: steps_seen.append((e, s)))
    assert steps_seen[0] == (2, 8)  # continues at the next step, not at the next epoch
    assert _without_seconds(resumed.history) == _without_seconds(reference.history)
    assert resumed.metrics == reference.metrics
    for a, b in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)


def test_resume_after_a_finished_epoch_checkpoint(tmp_path):
    cfg = build_config(quick_config(**STATEFUL))
    reference = train(cfg, out=tmp_path / "reference")

    interrupt = ctrl_c_at(2, 1)

    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "cut", on_step_end=interrupt)
    resumed = train(None, resume=tmp_path / "cut")
    assert resumed.metrics == reference.metrics


def _cli(*args):
    return [sys.executable, "-m", "trainlab", *map(str, args)]


FASHION_SLOW = ["data.limit=12000", "model.hidden=[256]", "train.epochs=3", "train.batch_size=32",
                "regularize.augment.noise=0.1", "model.dropout=0.1", "train.progress=lines"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted CLI run both subprocess tests compare with."""
    out = tmp_path_factory.mktemp("resume") / "reference"
    done = subprocess.run(_cli("train", "-c", ROOT / "examples/seed_mlp.yaml", *FASHION_SLOW, "--out", out,
                               "--json"), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout.strip().splitlines()[-1])


def test_real_sigint_to_the_cli_saves_exits_130_and_resumes_exactly(tmp_path, fashion_available, uninterrupted):
    ref_dir, ref_summary = uninterrupted
    out = tmp_path / "cut"
    proc = subprocess.Popen(_cli("train", "-c", ROOT / "examples/seed_mlp.yaml", *FASHION_SLOW, "--out", out),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt somewhere inside epoch 2: after epoch 1's row is written.
    assert wait_for(lambda: (out / "metrics.jsonl").exists())
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    resumed = subprocess.run(_cli("train", "--resume", out, "--json"), capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["metrics"] == ref_summary["metrics"]
    assert _without_seconds(_read_rows(out)) == _without_seconds(_read_rows(ref_dir))


def test_sigkill_mid_epoch_resumes_from_the_periodic_checkpoint(tmp_path, fashion_available, uninterrupted):
    ref_dir, ref_summary = uninterrupted
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("train", "-c", ROOT / "examples/seed_mlp.yaml", *FASHION_SLOW,
                                 "train.checkpoint_every=50", "--out", out),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.pt"

    def mid_epoch_checkpoint_saved():
        if not (out / "metrics.jsonl").exists() or not last.exists():
            return False
        return checkpoint.load(last)["progress"]["step"] > 0  # atomic writes: never a torn file

    assert wait_for(mid_epoch_checkpoint_saved)
    proc.kill()  # SIGKILL: no handler runs; only what was saved atomically survives
    proc.wait(timeout=60)
    saved = checkpoint.load(last)
    resumed = subprocess.run(_cli("train", "--resume", out, "--json"), capture_output=True, text=True,
                             cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["metrics"] == ref_summary["metrics"], saved["progress"]
    assert _without_seconds(_read_rows(out)) == _without_seconds(_read_rows(ref_dir))
