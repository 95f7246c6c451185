"""Shared fixtures: small real datasets, a quick config, and a CLI runner."""

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

# The suite's neighbour tables (trainlab.neighbours) go to a folder of its own, not ~/.cache, and the
# CLI processes the tests start inherit it; a test that needs an empty cache sets its own.
os.environ["TRAINLAB_CACHE"] = tempfile.mkdtemp(prefix="trainlab-test-cache-")
atexit.register(shutil.rmtree, os.environ["TRAINLAB_CACHE"], True)


# A GPU recipe: on the CPU one of its steps takes seconds (6 x 384 wide, 64 windows of 256) and
# torch.compile minutes, so the CPU suite runs (and checks) its file at a small width without
# compile. The full recipe runs in bench/gpu.sh.
GPU_EXAMPLES = {"shakespeare_gpu.yaml": ["model.n_layer=1", "model.n_embd=48", "model.block_size=32",
                                         "train.batch_size=4", "train.compile=false"]}


TEXT_FOLDER_EXAMPLES = {"text_folder_bpe.yaml"}  # examples whose data.path is the text_folder fixture


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory):
    """Real text for the folder examples: the first 300,000 characters of Tiny Shakespeare as three files."""
    text = (ROOT / "trainlab/data/tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]
    root = tmp_path_factory.mktemp("plays")
    for i in range(3):
        (root / f"part{i}.txt").write_text(text[i * 100_000:(i + 1) * 100_000], encoding="utf-8")
    return root


def quick_config(**sections) -> dict:
    """A seconds-long config on scikit-learn's digits (real 8x8 handwritten digits, 1797 images)."""
    cfg = {
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [32]},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 3, "batch_size": 32, "seed": 0, "progress": "none"},
    }
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def ctrl_c_at(epoch: int, step: int):
    """An on_step_end hook for train(): Ctrl-C (a real SIGINT to this process) after that step."""
    def hook(e: int, s: int) -> None:
        if (e, s) == (epoch, step):
            os.kill(os.getpid(), signal.SIGINT)
    return hook


def run_main(capsys, *args):
    """`trainlab ARGS` through cli.main in this process (torch imported once, not per call), as a
    completed process: returncode, stdout, stderr (what run_cli returns from a new Python)."""
    from types import SimpleNamespace

    from trainlab.cli import main
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def run_cli(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run `python -m trainlab ARGS` as a user would; returns the completed process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainlab", *map(str, args)], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core machine: one thread avoids waiting on a descheduled second one."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread_module():
    """one_thread for a whole module whose module-scoped fixtures train (pytestmark = usefixtures)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fashion_available():
    """Fashion-MNIST must be installed (make setup does it): a missing set fails, never skips."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), \
        "Fashion-MNIST missing: run `make setup` as root (installs Debian's dataset-fashion-mnist)"
    return FASHION


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Data roots under tmp_path only: no $TRAINLAB_DATA, an empty home, an empty system root."""
    from trainlab.data import locate
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locate, "SYSTEM_ROOTS", (str(tmp_path / "system"),))
    return tmp_path


def truncated_fashion_root(tmp_path: Path, fashion: Path) -> tuple[Path, Path]:
    """A data root whose fashion-mnist folder links the real files but for a train-labels file cut
    to its first 2,000 bytes; returns (root, the truncated file)."""
    folder = tmp_path / "root" / "fashion-mnist"
    folder.mkdir(parents=True)
    for f in fashion.iterdir():
        (folder / f.name).symlink_to(f)
    broken = folder / "train-labels-idx1-ubyte.gz"
    broken.unlink()
    broken.write_bytes((fashion / broken.name).read_bytes()[:2000])
    return tmp_path / "root", broken


def wait_for(predicate, timeout: float = 120) -> bool:
    """Poll `predicate` every 20 ms until it is true (True) or `timeout` seconds pass (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "a generated case"):
    """Fail (not hang) when the block takes longer than `seconds` (SIGALRM; main thread only)."""
    def expire(signum, frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
