"""Training on several processes: real torchrun workers (gloo, 2 processes x 1 thread) against one
process; resume at another world size, an elastic restart after SIGKILL, two nodes, SIGTERM, bad input."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from trainlab import checkpoint
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.train import build_setup, train

from conftest import FASHION, ROOT, wait_for

# The seed MLP on 12,000 Fashion-MNIST images (10,800 train), batch 63: 172 steps per epoch, and
# every global batch splits unevenly over 2 ranks (32 + 31), so the exact handling of uneven
# slices is what every step exercises. A checkpoint every 40 steps gives the kill tests a
# mid-epoch last.pt to resume from. In float64: a run at another world size differs from the
# reference by rounding only, and over hundreds of SGD steps float32's rounding differences grow
# chaotically (ReLU cuts flip; bench/ddp_bench.py saw 25 of 10,000 test images apart after 1,688
# steps), so "within 2 examples" would be a bound read off one machine. In float64 the start is
# 2^29 times smaller and the comparison holds by a wide margin on any CPU.
SEED_MLP = ["-c", str(ROOT / "examples/seed_mlp.yaml"), "data.limit=12000", "train.epochs=3",
            "train.batch_size=63", "train.checkpoint_every=40", "train.progress=lines", "train.dtype=float64"]
# One thread per process (2 processes on 2 cores), and collectives that give up after 60 s rather
# than the default 300 s if a test goes wrong.
ENV = {"OMP_NUM_THREADS": "1", "TRAINLAB_COLLECTIVE_TIMEOUT": "60"}


def _cmd(*args):
    return [sys.executable, "-m", "trainlab", *map(str, args)]


def _run(*args, cwd=ROOT, timeout=300):
    return subprocess.run(_cmd(*args), cwd=cwd, env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=timeout)


def _popen(*args, cwd=ROOT):
    return subprocess.Popen(_cmd(*args), cwd=cwd, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _mid_epoch_checkpoint(run: Path, epoch: int):
    """True once last.pt holds a position inside `epoch` (atomic writes: never a torn file)."""
    def saved():
        last = run / "checkpoints" / "last.pt"
        if not last.exists():
            return False
        progress = checkpoint.load(last)["progress"]
        return progress["epoch"] == epoch and progress["step"] > 0
    return saved


def _workers(run: Path) -> dict[int, int]:
    """{rank: pid} of the torchrun workers training into `run` (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(run).encode() in cmdline and b"TORCHELASTIC_RESTART_COUNT=0" in env:
            ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
            if ranks:
                found[ranks[0]] = int(proc.name)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The uninterrupted 2-process run the tests compare with, started from an empty working folder."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), "Fashion-MNIST missing: run `make setup` as root"
    base = tmp_path_factory.mktemp("ddp")
    work = base / "work"
    work.mkdir()
    done = _run("train", *SEED_MLP, "--out", base / "run", "--nproc", 2, "--json", cwd=work)
    assert done.returncode == 0, done.stderr
    return base / "run", _summary(done.stdout), work, done


def test_two_processes_train_like_one_and_only_rank_0_writes(two_processes, tmp_path, one_thread):
    run, summary, work, done = two_processes
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", SEED_MLP[2:] + ["train.threads=1", "train.progress=none"])
    single = train(cfg, out=tmp_path / "single")
    assert summary["world_size"] == 2 and summary["epochs_run"] == 3
    # 10,000 test images; float64 rounding of the all-reduce and the slices may move a prediction
    # that sits on a decision boundary, not more than 2.
    n_test = 10_000
    diff = abs(summary["metrics"]["test"]["accuracy"] - single.metrics["test"]["accuracy"]) * n_test
    assert diff <= 2 + 1e-6, (summary["metrics"]["test"], single.metrics["test"])
    assert [r["step"] for r in _rows(run)] == [r["step"] for r in _rows(single.run_dir)] == [172, 344, 516]
    # Rank 0 alone wrote: the same files as the 1-process run, nothing in the working folder, and
    # one copy of the result on stdout (the JSON line and the "run:" line, not one per rank).
    assert _files(run) == _files(single.run_dir)
    assert _files(work) == []
    assert done.stdout.count("run: ") == 1 and done.stdout.count('"world_size"') == 1


def test_one_step_on_two_processes_equals_one_within_rounding(tmp_path, fashion_available, one_thread):
    """One SGD step on one batch of 63 (32 + 31 per rank): the weights of both runs within a bound
    computed from the rounding of this very step (the derivation is in _gradient_error_bound).

    In float64 (train.dtype), so that the bound is tight enough to see a 0.1% error in the update:
    the uneven slices weighted equally (a mean of the ranks' means, 1/64 against 1/63 per example)
    would be 1.6% off. Float32 runs are compared by their test accuracy in the first test: the
    worst-case float32 bound of this step is only about half the step itself (the first layer's
    γ_785 error, ReLU cuts that may differ), too loose to tell a correct update from that one.
    """
    overrides = ["data.limit=70", "train.epochs=1", "train.batch_size=63", "train.progress=none",
                 "train.dtype=float64"]
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", [*overrides, "train.threads=1"])
    s = build_setup(cfg, None, None, None, None, None, None)  # the initial weights and the batch, unwritten
    assert len(s.train_batches) == 1 and s.train_batches.n == 63
    x, y = next(iter(s.train_batches.epoch(cfg.train.seed, 1)))
    w0 = {k: v.double().numpy() for k, v in s.model.state_dict().items()}
    single = train(cfg, out=tmp_path / "single")
    done = _run("train", "-c", ROOT / "examples/seed_mlp.yaml", *overrides, "--out", tmp_path / "ddp", "--nproc", 2)
    assert done.returncode == 0, done.stderr
    one = {k: v.double().numpy() for k, v in checkpoint.load(single.run_dir / "checkpoints/last.pt")["model"].items()}
    two = {k: v.double().numpy() for k, v in checkpoint.load(tmp_path / "ddp/checkpoints/last.pt")["model"].items()}
    u = 2.0 ** -53  # float64's unit roundoff
    grad, bound = _gradient_error_bound(w0, x.double().flatten(1).numpy(), y.numpy(), u)  # x: (63, 784)
    lr = cfg.optim.lr
    for name in w0:
        # w' = fl(w - lr*g) on each side (momentum's first step: the buffer is g): the gradients'
        # difference times lr, plus each side's rounding of the product and of the update.
        allowed = lr * bound[name] + 2 * u * (np.abs(one[name]) + lr * np.abs(grad[name])) * 1.01
        gap = np.abs(one[name] - two[name])
        assert (gap <= allowed).all(), (name, float(gap.max()), float(allowed[gap > allowed].min()))
        # The step moved the weights by far more than the bound: the comparison can fail.
        # The step moved the weights by far more than the bound: an update 0.1% off would fail.
        assert allowed.max() < 1e-3 * np.median(np.abs(one[name] - w0[name])), name


def _gradient_error_bound(w, x, y, u):
    """The exact gradient of the mean cross-entropy of the 784-128-10 ReLU MLP at weights `w` on
    batch (x, y), float64, and a bound on |g_one - g_two|: each computation in floating point (one process, or
    two ranks' halves summed by the all-reduce) is within e of the exact g, so the two within 2e.

    e comes from the standard bound on a dot product of n terms, |fl(a.b) - a.b| <= γ_n Σ|a_i b_i| with
    γ_n = n u / (1 - n u), u the unit roundoff, propagated forward and back to first order: ReLU is
    1-Lipschitz (where a pre-activation lies within its error of 0, the runs' masks may differ and
    the backward entry is bounded by its whole size), softmax moves each probability by at most
    2 max_j |Δz_j| (Σ_k |∂p_k/∂z_j| <= 2 p_j),
    plus γ_12 p for its own exp, sum and division. The ranks' halves add 3 roundings (the scale by
    2 n_r / B, the sum of two, the division by 2): γ_3 times the gradient's absolute terms.
    """
    gamma = lambda n: n * u / (1 - n * u)  # noqa: E731
    keys = list(w)  # Linear(784,128) weight, bias, Linear(128,10) weight, bias, in module order
    W1, b1, W2, b2 = (w[k] for k in keys)
    B = len(y)
    Y = np.eye(W2.shape[0])[y]
    a1 = x @ W1.T + b1
    e_a1 = gamma(W1.shape[1] + 1) * (np.abs(x) @ np.abs(W1).T + np.abs(b1))
    # A pre-activation within its error of 0 may be cut by the ReLU in one run and not in the other.
    mask, unsure = a1 > 0, np.abs(a1) <= e_a1
    h, e_h = np.maximum(a1, 0), e_a1 * (mask | unsure)
    z = h @ W2.T + b2
    e_z = gamma(W2.shape[1] + 1) * (h @ np.abs(W2).T + np.abs(b2)) + e_h @ np.abs(W2).T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e_p = 2 * e_z.max(1, keepdims=True) + gamma(12) * p
    d2, e_d2 = (p - Y) / B, (e_p + u * np.abs(p - Y)) / B
    dh = d2 @ W2
    e_dh = gamma(W2.shape[0]) * (np.abs(d2) @ np.abs(W2)) + e_d2 @ np.abs(W2)
    d1 = dh * mask
    e_d1 = np.where(unsure, np.abs(dh) + e_dh, e_dh * mask)  # a flipped mask: the whole entry, or none
    grads = {keys[0]: d1.T @ x, keys[1]: d1.sum(0), keys[2]: d2.T @ h, keys[3]: d2.sum(0)}
    terms = {keys[0]: np.abs(d1).T @ np.abs(x), keys[1]: np.abs(d1).sum(0),
             keys[2]: np.abs(d2).T @ h, keys[3]: np.abs(d2).sum(0)}
    carried = {keys[0]: e_d1.T @ np.abs(x), keys[1]: e_d1.sum(0),
               keys[2]: e_d2.T @ h + np.abs(d2).T @ e_h, keys[3]: e_d2.sum(0)}
    bound = {k: 2 * ((gamma(B) + gamma(3)) * terms[k] + carried[k]) for k in keys}
    return grads, bound


def test_sigterm_saves_then_one_process_resumes_a_two_process_run(two_processes, tmp_path):
    ref_run, ref_summary, _, _ = two_processes
    out = tmp_path / "cut"
    proc = _popen("train", *SEED_MLP, "--out", out, "--nproc", 2)
    assert wait_for(_mid_epoch_checkpoint(out, 2)), proc.stderr.read() if proc.poll() is not None else ""
    proc.send_signal(signal.SIGTERM)  # what SLURM and Kubernetes send: torchrun passes it to the workers
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = checkpoint.load(out / "checkpoints/last.pt")["progress"]
    assert saved["step"] > 0  # stopped inside an epoch: the position is a global step
    resumed = _run("train", "--resume", out, "--json")  # one process now
    assert resumed.returncode == 0, resumed.stderr
    summary = _summary(resumed.stdout)
    assert "world_size" not in summary and summary["epochs_run"] == ref_summary["epochs_run"]
    assert [r["step"] for r in _rows(out)] == [r["step"] for r in _rows(ref_run)]
    diff = abs(summary["metrics"]["test"]["accuracy"] - ref_summary["metrics"]["test"]["accuracy"]) * 10_000
    assert diff <= 2 + 1e-6  # the same run up to all-reduce rounding, as in the first test


def test_elastic_restart_after_sigkill_ends_exactly_like_an_uninterrupted_run(two_processes, tmp_path):
    ref_run, ref_summary, _, _ = two_processes
    out = tmp_path / "killed"
    proc = _popen("train", *SEED_MLP, "--out", out, "--nproc", 2, "--max-restarts", 1, "--json")
    assert wait_for(_mid_epoch_checkpoint(out, 2)), proc.stderr.read() if proc.poll() is not None else ""
    workers = _workers(out)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)  # no handler runs; torchrun restarts the group
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert "exitcode: -9" in stderr  # the agent saw the kill and restarted
    summary = _summary(stdout)
    # Same world size, same global position: the resumed ranks recompute the very same sums.
    assert summary["metrics"] == ref_summary["metrics"]
    assert [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in _rows(out)] == _rows(ref_run)


def test_two_nodes_on_one_machine_train_one_run(tmp_path, fashion_available):
    """Two torchrun agents joined by a c10d rendezvous on 127.0.0.1, one worker each."""
    endpoint = f"127.0.0.1:{_free_port()}"
    args = ["train", "-c", ROOT / "examples/seed_mlp.yaml", "data.limit=2048", "train.epochs=1",
            "train.progress=none", "--out", tmp_path / "run", "--nproc", 1, "--nnodes", 2,
            "--rdzv-endpoint", endpoint, "--rdzv-timeout", 120, "--json"]
    nodes = [_popen(*args, "--node-rank", rank, cwd=tmp_path) for rank in (0, 1)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr
    printed = [_summary(stdout) for stdout, _ in outputs if stdout.strip()]
    assert len(printed) == 1 and printed[0]["world_size"] == 2  # rank 0's node alone prints the result
    assert json.loads((tmp_path / "run/summary.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# A small GPT on the shipped Tiny Shakespeare, 6 x 2 windows per step, no dropout (the ranks' own
# dropout streams would differ from one process's).
SMALL_GPT = ["-c", str(ROOT / "examples/shakespeare_char.yaml"), "model.n_layer=2", "model.n_head=2",
             "model.n_embd=32", "model.block_size=32", "model.dropout=0", "train.steps=60", "eval.every=20",
             "train.batch_size=6", "train.accumulate=2", "eval.limit=64", "train.progress=none",
             "train.checkpoint_every=5"]


@pytest.fixture(scope="module")
def gpt_one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt") / "one"
    done = _run("train", *SMALL_GPT, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    return out


def _close_losses(rows_a, rows_b):
    # Rounding-level gradient differences over 60 steps: the losses agree to far better than the
    # 0.2 nats these steps lower the loss by; a wrong slice or weight (a rank's batch counted
    # twice, a micro-batch's share off) would show at that scale.
    assert [(r["step"], r["tokens"]) for r in rows_a] == [(r["step"], r["tokens"]) for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.01 and abs(a["val_loss"] - b["val_loss"]) < 0.01
    assert rows_b[0]["train_loss"] - rows_b[-1]["val_loss"] > 0.2


def test_gpt_sharded_with_fsdp_stops_on_sigterm_and_resumes_on_one_process(tmp_path, gpt_one_process):
    """train.strategy=fsdp: parameters, gradients and AdamW state sharded over 2 ranks; last.pt is
    gathered whole, so one unsharded process resumes it."""
    out = tmp_path / "fsdp"
    proc = _popen("train", *SMALL_GPT, "train.strategy=fsdp", "--out", out, "--nproc", 2)
    assert wait_for(_mid_epoch_checkpoint(out, 2)), proc.stderr.read() if proc.poll() is not None else ""
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    saved = checkpoint.load(out / "checkpoints/last.pt")
    assert saved["progress"]["step"] > 0
    # Whole tensors keyed like one process's: the sharded run's checkpoint is not sharded.
    one_state = checkpoint.load(gpt_one_process / "checkpoints/last.pt")["model"]
    assert {k: v.shape for k, v in saved["model"].items()} == {k: v.shape for k, v in one_state.items()}
    resumed = _run("train", "--resume", out, "--json")
    assert resumed.returncode == 0, resumed.stderr
    _close_losses(_rows(out), _rows(gpt_one_process))


def test_gpt_trains_on_two_processes_with_accumulation(tmp_path, gpt_one_process):
    done = _run("train", *SMALL_GPT, "--out", tmp_path / "ddp", "--nproc", 2, "--json")
    assert done.returncode == 0, done.stderr
    rows_two, rows_one = _rows(tmp_path / "ddp"), _rows(gpt_one_process)
    # The same batches (6 x 2 windows per step, split 3 + 3 and micro-batched on each rank): the
    # same tokens counted, the same steps, rank 0's tokenizer.
    assert (tmp_path / "ddp/tokenizer.json").read_text() == (gpt_one_process / "tokenizer.json").read_text()
    _close_losses(rows_two, rows_one)


def test_a_rendezvous_nobody_answers_is_a_clear_error(tmp_path):
    start = time.time()
    done = _run("train", "-c", ROOT / "examples/seed_mlp.yaml", "--nproc", 1, "--nnodes", 2,
                "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-timeout", 3, "--out", tmp_path / "run",
                cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "rendezvous at 127.0.0.1" in done.stderr and "within 3 s" in done.stderr
    assert "Traceback" not in done.stderr and "frame #" not in done.stderr
    assert time.time() - start < 60
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--nproc", 0], "at least 1 process"),
    (["--nproc", 2, "--nnodes", 2], "--rdzv-endpoint"),
    (["--nproc", 2, "--nnodes", 2, "--rdzv-endpoint", "nohost"], "not HOST:PORT"),
])
def test_bad_launcher_options_exit_2(args, message, tmp_path, capsys):
    code = main(["train", "-c", str(ROOT / "examples/seed_mlp.yaml"), *map(str, args), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_sigterm_on_one_process_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = _popen("train", "-c", ROOT / "examples/seed_mlp.yaml", "data.limit=12000", "train.epochs=2",
                  "train.batch_size=32", "train.progress=lines", "--out", out)
    assert wait_for(lambda: (out / "metrics.jsonl").exists())
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert checkpoint.load(out / "checkpoints/last.pt")["progress"]["step"] > 0
    resumed = _run("train", "--resume", out, "--json")
    assert resumed.returncode == 0 and _summary(resumed.stdout)["epochs_run"] == 2, resumed.stderr
