"""Faults: checkpoints changed after they were written, checkpoints of another run or of no run at
all (a pickle with a payload included), two processes on one run directory, an output folder that
cannot be written. Each is refused with the exit code of DESIGN.md, naming what is wrong."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from trainlab import checkpoint
from trainlab.cli import main
from trainlab.config import build_config
from trainlab.errors import ConfigError, DataError, Interrupted
from trainlab.runs import LOCK_NAME, RunDir, RunLock
from trainlab.train import train

from conftest import ROOT, ctrl_c_at, quick_config, run_cli, wait_for


def _interrupted_run(out: Path, at=(2, 5), **sections) -> Path:
    """A digits run stopped by Ctrl-C mid-epoch: its last.pt holds a mid-epoch state."""
    cfg = build_config(quick_config(**sections))

    interrupt = ctrl_c_at(*at)

    with pytest.raises(Interrupted):
        train(cfg, out=out, on_step_end=interrupt)
    return out / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """One interrupted run the checkpoint tests copy (each test damages its own copy)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("faults") / "cut"
    _interrupted_run(out)
    return out


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(LOCK_NAME))
    return to


# ---------------------------------------------------------------- digests

def test_a_checkpoint_is_a_plain_torch_zip_whose_comment_is_its_digest(cut_run):
    import hashlib

    path = cut_run / "checkpoints" / "last.pt"
    data = path.read_bytes()
    comment = zipfile.ZipFile(path).comment
    assert comment.startswith(b"trainlab-sha256:")
    # The digest covers exactly what torch.save wrote: the file without the comment (length 0).
    raw = data[:-len(comment) - 2] + b"\0\0"
    assert hashlib.sha256(raw).hexdigest() == comment.split(b":")[1].decode()
    plain = torch.load(path, weights_only=True)  # any torch reads it as it reads its own files
    assert plain["trainlab_format"] == checkpoint.FORMAT and plain["progress"]["step"] == 5


def test_64_bytes_flipped_in_a_mid_run_last_pt_refuse_resume_naming_the_file(cut_run, tmp_path):
    """The issue's case: this loaded, and the resumed run was later reported as diverged."""
    run = _copy(cut_run, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    last.write_bytes(bytes(data))
    metrics_before = (run / "metrics.jsonl").read_bytes()

    proc = run_cli("train", "--resume", run, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(last) in proc.stderr and "was changed after it was written" in proc.stderr
    assert "diverged" not in proc.stderr
    assert last.read_bytes() == bytes(data) and (run / "metrics.jsonl").read_bytes() == metrics_before


@pytest.mark.parametrize("damage", ["flip the digest", "cut the digest off", "cut the file in half"])
def test_a_damaged_end_of_file_is_refused_too(cut_run, tmp_path, damage):
    path = tmp_path / "last.pt"
    data = bytearray((cut_run / "checkpoints" / "last.pt").read_bytes())
    if damage == "flip the digest":
        data[-5] ^= 0x01
    elif damage == "cut the digest off":
        del data[-40:]
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=str(path)) as err:
        checkpoint.load(path)
    if damage != "cut the file in half":
        assert "changed after it was written" in str(err.value)


def test_a_checkpoint_from_before_digests_loads_with_a_warning(tmp_path):
    """Earlier trainlab versions wrote plain torch.save files: they load, unverified, with a warning."""
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    with pytest.warns(UserWarning, match="has no digest"):
        state = checkpoint.load(path)
    assert state["epoch"] == 3


def _signed(path: Path, state) -> None:
    """A file as checkpoint.save writes it, but with any content (the digest is not a signature)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(checkpoint._with_digest(buffer.getvalue()))


def test_a_checkpoint_of_a_newer_trainlab_is_refused_naming_the_format(tmp_path):
    path = tmp_path / "new.pt"
    _signed(path, {"model": {}, "trainlab_format": checkpoint.FORMAT + 1, "code_version": "9.0.0+abc"})
    with pytest.raises(DataError, match=f"newer trainlab \\(9.0.0\\+abc, checkpoint format {checkpoint.FORMAT + 1}\\)"):
        checkpoint.load(path)


@pytest.mark.parametrize("content", ["random bytes", "a tensor", "a dict without weights", "an empty file"])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "last.pt"
    if content == "random bytes":
        path.write_bytes(os.urandom(5000))
    elif content == "a tensor":
        _signed(path, torch.zeros(3))
    elif content == "a dict without weights":
        _signed(path, {"epoch": 1, "trainlab_format": 1})
    else:
        path.write_bytes(b"")
    with pytest.raises(DataError, match=str(path)):
        checkpoint.load(path)


class _Payload:
    """Unpickling this runs `touch MARKER`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the raw pickle's protocol
@pytest.mark.parametrize("form", ["a raw pickle", "a torch zip", "a torch zip with a valid digest"])
def test_a_pickle_with_a_payload_is_refused_and_nothing_runs(tmp_path, form):
    marker = tmp_path / "PWNED"
    payload = {"model": {}, "x": _Payload(marker)}
    # The payload works: plain pickle.loads would run it (checked on a copy of the bytes, then removed).
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
    marker.unlink()

    run = tmp_path / "run"
    RunDir.create(run, "evil")
    (run / "config.yaml").write_text(json.dumps(quick_config()))
    last = run / "checkpoints" / "last.pt"
    if form == "a raw pickle":
        last.write_bytes(pickle.dumps(payload))
    elif form == "a torch zip":
        torch.save(payload, last)
    else:
        _signed(last, payload)
    with pytest.raises(DataError) as err:
        checkpoint.load(last)
    assert str(last) in str(err.value) and "nothing from it was executed" in str(err.value)
    assert "weights_only=False" not in str(err.value)  # torch's own advice to load it unsafely is not passed on
    assert main(["train", "--resume", str(run)]) == 3
    assert not marker.exists()


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """A finished digits run with another width and a finished regression run (scikit-learn's diabetes)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("others")
    wide = train(build_config(quick_config(model={"hidden": [48]}, train={"epochs": 1})), out=base / "wide")
    regression = train(build_config(quick_config(data={"name": "diabetes"}, train={"epochs": 1})),
                       out=base / "regression")
    return wide.run_dir, regression.run_dir


@pytest.mark.parametrize("other, key", [(0, "model.hidden"), (1, "data.name")])
def test_a_checkpoint_of_another_model_or_task_is_refused_naming_the_key(cut_run, other_runs, tmp_path, other,
                                                                        key):
    run = _copy(cut_run, tmp_path / "run")
    shutil.copy(other_runs[other] / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    with pytest.raises(DataError, match=f"{key} is .* in the checkpoint") as err:
        train(None, resume=run)
    assert str(run / "checkpoints" / "last.pt") in str(err.value)


def test_weights_of_another_shape_name_the_parameters_that_do_not_fit(other_runs):
    from trainlab.models import build_model
    from trainlab.config import ModelConfig

    model = build_model(ModelConfig(hidden=[32]), (1, 8, 8), 10)
    with pytest.raises(DataError, match="size mismatch for .*torch.Size\\(\\[48, 64\\]\\)"):
        checkpoint.load_weights(model, other_runs[0] / "checkpoints" / "best.pt")


def test_final_weights_only_cannot_be_resumed(cut_run, tmp_path):
    """Packed training writes last.pt with the final weights and `resumable: False`."""
    run = _copy(cut_run, tmp_path / "run")
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    checkpoint.save(run / "checkpoints" / "last.pt", {"model": state["model"], "resumable": False,
                                                      "config": state["config"]})
    with pytest.raises(DataError, match="cannot be resumed"):
        train(None, resume=run)


# ---------------------------------------------------------------- two processes, one run directory

# The first run is stopped (SIGSTOP) once it holds the lock and has saved an epoch, so it stays alive
# while the others start (2-3 s each) and are refused, however fast the CPU: a run of fixed length
# (54 epochs, about 7 s on 2 busy cores) ended first on a faster idle one. Stopped, it keeps its flock.
HOLDER_EPOCHS = 54
HOLDER = ["data.name=digits", "data.val_fraction=0.2", "model.hidden=[32]", "train.batch_size=8",
          f"train.epochs={HOLDER_EPOCHS}", "train.checkpoint_every=40", "train.progress=none", "train.threads=1"]


def test_a_second_process_on_a_live_run_directory_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "trainlab", "train", *HOLDER, "--out", str(out)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def holds_and_saved():
            lock, metrics = out / LOCK_NAME, out / "metrics.jsonl"
            return (lock.exists() and f'"pid": {first.pid}' in lock.read_text()
                    and (out / "checkpoints" / "last.pt").exists() and metrics.exists() and metrics.read_text())

        assert wait_for(holds_and_saved), first.stderr.read() if first.poll() is not None else "no lock"
        first.send_signal(signal.SIGSTOP)  # alive, holding the lock, until the SIGKILL below
        # A train --out onto it and a --resume of it, both while the first one trains: refused, exit 2.
        seconds = [sys.executable, "-m", "trainlab", "train"]
        others = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for cmd in (seconds + [*HOLDER, "--out", str(out)], seconds + ["--resume", str(out)])]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in others]
        assert first.poll() is None, "the first run ended before it was stopped and the others refused"
        for code, stderr in results:
            assert code == 2, stderr
            assert f"pid {first.pid} on host {socket.gethostname()}" in stderr and "Traceback" not in stderr
        metrics = (out / "metrics.jsonl").read_text()
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock file keeps its pid; the kernel drops the flock
        first.wait(timeout=60)
    assert json.loads(metrics.splitlines()[-1])["epoch"] >= 1  # the first run's files were left alone

    # The dead process's lock does not block: --resume takes it over with a warning and finishes.
    assert f'"pid": {first.pid}' in (out / LOCK_NAME).read_text()
    with pytest.warns(UserWarning, match=f"taking over the lock left by pid {first.pid} .* no longer running"):
        result = train(None, resume=out)
    assert result.summary["stopped_because"] == "epochs" and len(result.history) == HOLDER_EPOCHS


def test_the_lock_is_released_cleanly_and_shared_within_one_process(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(folder):
        holder = RunLock.holder(folder)
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(ConfigError, match=f"pid {os.getpid()}"):  # a second `with` is another holder
            RunLock(folder).acquire()
    assert (folder / LOCK_NAME).read_text() == ""  # a clean release: no takeover warning next time
    assert RunLock.holder(folder) is None
    # RunDir.lock() hands the process its own lock (resuming in the process train() was interrupted in).
    first, second = RunDir(folder).lock(), RunDir(folder).lock()
    assert first._lock is second._lock and first._lock.held


# ---------------------------------------------------------------- output folders that cannot be written

def test_an_out_folder_that_is_not_writable_is_exit_2_naming_it_before_training(tmp_path):
    """chmod does not stop root: as root the CLI runs with CAP_DAC_OVERRIDE dropped from its bounding
    set (setpriv), so the read-only folder refuses it as it refuses any user; without setpriv, a folder
    under /proc, where nobody can create folders, stands in."""
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv"):
            prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        else:
            locked = Path("/proc/trainlab-not-writable")
    out = locked / "run"
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "trainlab", "train", "-c", "examples/seed_mlp.yaml",
                               "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        if locked.is_relative_to(tmp_path):
            locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and f"'{locked}'" in proc.stderr and "Nothing was trained" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("where", ["under a file", "onto a file"])
def test_an_out_path_through_a_file_is_exit_2_naming_it(tmp_path, where):
    f = tmp_path / "notes.txt"
    f.write_text("not a folder")
    out = f / "run" if where == "under a file" else f
    with pytest.raises(ConfigError, match=f"'{f}' is a file, not a folder"):
        RunDir.create(out, "x")
