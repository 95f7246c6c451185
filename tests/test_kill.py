"""SIGKILL or SIGTERM at a random moment of a run with train.checkpoint_every: `--resume` always
succeeds and ends with the metrics (and curves) of the uninterrupted run.

The moment is a fraction of the measured length of an uninterrupted run, chosen by Hypothesis, so
the kills land anywhere: while the data loads, between two checkpoints, inside a checkpoint's write
(its temp file left behind), between metrics.jsonl and last.pt, during the final evaluation, after
the end. Each run is a child forked from a forkserver that imported trainlab.train (torch, the
package, scikit-learn's dataset loader) but never computed: a child starts in about 0.1 s instead
of the 2-3 s of a new Python, and fork does not copy a parent whose torch threads already ran.
"""

import json
import multiprocessing
import os
import signal
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from trainlab.train import train

from conftest import quick_config

# Momentum, a warm-up then cosine schedule, dropout (the global RNG), augmentation (its own
# generator) and shuffling: everything that carries state across steps and must come back exactly.
# digits: 1,150 training examples, 36 steps of 32 per epoch; last.pt every 10 steps and per epoch.
CONFIG = quick_config(model={"hidden": [64], "dropout": 0.2}, schedule={"name": "cosine", "warmup_epochs": 0.5},
                      regularize={"augment": {"crop_padding": 1, "noise": 0.05}},
                      train={"epochs": 2, "checkpoint_every": 10, "threads": 1})
TORN = ".last.pt.k1ll3d.tmp"  # what atomic_write_bytes leaves when a kill cuts a write of last.pt short


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trainlab.train", "sklearn.datasets"])
    return ctx


def _start(ctx, **kwargs):
    process = ctx.Process(target=train, kwargs=kwargs, daemon=True)
    process.start()
    return process


def _wait_for_config(out: Path, process, timeout: float = 60) -> None:
    """Until the run has written config.yaml (it is a run directory from then on)."""
    end = time.monotonic() + timeout
    while not (out / "config.yaml").exists():
        assert process.exitcode is None, f"the run ended with {process.exitcode} before writing config.yaml"
        assert time.monotonic() < end, "no config.yaml after 60 s"
        time.sleep(0.002)


def _rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(forkserver, tmp_path_factory):
    """The uninterrupted run, in a child like the killed ones: its summary, rows and length in seconds
    from config.yaml to its exit (what the kills' moments are fractions of)."""
    out = tmp_path_factory.mktemp("kill") / "reference"
    process = _start(forkserver, config=CONFIG, out=str(out))
    _wait_for_config(out, process)
    t0 = time.monotonic()
    process.join(timeout=120)
    seconds = time.monotonic() - t0
    assert process.exitcode == 0
    return json.loads((out / "summary.json").read_text()), _rows(out), seconds


# CI budget: 20 generated moments plus the 2 fixed ones, each a killed run (at most one run's length,
# about 0.3 s on 2 busy cores) and a resumed one (about the same) plus two forks of about 0.1 s: about
# 20 s in all, with the forkserver's start (2-3 s, once).
@settings(max_examples=20, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(fraction=st.floats(0.0, 1.1), signum=st.sampled_from([signal.SIGKILL, signal.SIGTERM]))
@example(fraction=0.0, signum=signal.SIGKILL)   # right after config.yaml: the data is still loading, no last.pt yet
@example(fraction=1.1, signum=signal.SIGKILL)   # after the run ended: resume finds the final last.pt, re-scores it
def test_sigkill_at_a_random_moment_then_resume_ends_like_the_uninterrupted_run(fraction, signum, forkserver,
                                                                                 uninterrupted, tmp_path_factory):
    reference, reference_rows, seconds = uninterrupted
    out = tmp_path_factory.mktemp("killed") / "run"
    process = _start(forkserver, config=CONFIG, out=str(out))
    _wait_for_config(out, process)
    time.sleep(fraction * seconds)
    # SIGKILL: no handler runs, only what was written atomically survives. SIGTERM (a scheduler's
    # stop): the loop saves last.pt at the step it reached and raises Terminated (before the loop
    # has installed its handler, SIGTERM's default ends the process as SIGKILL does).
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:  # it had already ended and been reaped
        pass
    process.join(timeout=60)
    last = out / "checkpoints" / "last.pt"
    event(f"{signal.Signals(signum).name}: " + ("stopped" if process.exitcode != 0 else "already finished"))
    event("a last.pt was saved" if last.exists() else "killed before the first last.pt")
    torn = list(last.parent.glob(".last.pt.*.tmp"))
    event("a torn temp file was left" if torn else "no torn temp file")
    # A kill inside a write leaves a temp file beside last.pt; every case gets one.
    (last.parent / TORN).write_bytes(b"PK\x03\x04 cut short by SIGKILL")

    resumed = _start(forkserver, config=None, resume=str(out))
    resumed.join(timeout=120)
    assert resumed.exitcode == 0, f"--resume failed after a kill at {fraction:.3f} of the run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == reference["metrics"]
    assert summary["epochs_run"] == reference["epochs_run"] and summary["best_epoch"] == reference["best_epoch"]
    assert _rows(out) == reference_rows
    assert not list(last.parent.glob(".*.tmp")) and not list(out.glob(".*.tmp"))  # --resume removed them
    shutil.rmtree(out.parent)
