"""What DDP and FSDP cost per step on one device: plain train_step against the same step wrapped.

    python bench/wrapper_bench.py                    # CPU (gloo): the seed MLP and the CPU-recipe GPT
    python bench/wrapper_bench.py --device cuda      # GPU (NCCL): the seed MLP and nanoGPT's GPU-recipe GPT
    python bench/wrapper_bench.py --quick            # a few steps each: checks the bench runs

One process, a process group of world size 1 (so no gradient leaves the device: what is measured
is the wrapper's own work, DDP's bucketing and hooks, FSDP's all-gather and reduce-scatter calls
and parameter bookkeeping), real batches (Fashion-MNIST, Tiny Shakespeare), trainlab's own
train_step and distributed.shard. The contenders alternate in rounds of `--steps` steps; each
figure is the median per-step time over the rounds after one warm-up round, the device
synchronised around every step. Writes OUT/wrapper_bench[_gpu].json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from run import environment  # noqa: E402

from trainlab import data, distributed  # noqa: E402
from trainlab.config import load_config  # noqa: E402
from trainlab.data.loader import make_batches  # noqa: E402
from trainlab.losses import build_loss  # noqa: E402
from trainlab.models import build_model  # noqa: E402
from trainlab.optim import build_optimizer, parameter_groups  # noqa: E402
from trainlab.train import train_step  # noqa: E402

# case -> (config, overrides, the wrapper measured against the plain step)
CASES = {
    "seed MLP": ("examples/seed_mlp.yaml", [], "ddp"),
    "GPT": ("examples/shakespeare_char.yaml", [], "fsdp"),
}
GPU_GPT = "examples/shakespeare_gpu.yaml"


def contenders(config: str, overrides: list[str], wrapper: str, device: torch.device):
    """(batches, {name: (model, step_model, optimizer)}, loss_fn): the same initial weights for both."""
    cfg = load_config(ROOT / config, [*overrides, f"train.device={device.type}"])
    splits = data.load(cfg)
    batches = make_batches(splits, "train", cfg.train.batch_size, device, torch.float32, cfg, train=True)
    torch.manual_seed(0)
    plain = build_model(cfg.model, splits.input_shape, splits.num_classes).to(device)
    wrapped = copy.deepcopy(plain)
    if wrapper == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        step_model = DistributedDataParallel(wrapped, device_ids=[device.index or 0] if device.type == "cuda" else None)
    else:
        distributed.shard(wrapped)  # fully_shard on each block, then the whole model (train.strategy=fsdp)
        step_model = wrapped
    models = {"plain": (plain, plain), wrapper: (wrapped, step_model)}
    built = {name: (m, s, build_optimizer(cfg, parameter_groups(cfg, m))) for name, (m, s) in models.items()}
    return batches, built, build_loss(cfg, splits.task, splits.num_classes), cfg


def time_steps(batch_iter, model, step_model, optimizer, loss_fn, clip, steps: int, device) -> list[float]:
    times = []
    model.train()
    for _ in range(steps):
        x, y = next(batch_iter)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            train_step(step_model, (x, y), loss_fn, optimizer, clip_grad_norm=clip)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def endless(batches, seed: int):
    epoch = 1
    while True:
        yield from batches.epoch(seed, epoch)
        epoch += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=20, help="steps per contender per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(BENCH / "results"))
    a = p.parse_args()
    device = torch.device("cuda:0" if a.device == "cuda" else "cpu")
    if a.device == "cuda":
        torch.cuda.set_device(device)
        CASES["GPT"] = (GPU_GPT, [], "fsdp")
    steps, rounds = (3, 2) if a.quick else (a.steps, a.rounds)
    with tempfile.TemporaryDirectory() as tmp:  # a world of one process, as torchrun would set it up
        dist.init_process_group("nccl" if a.device == "cuda" else "gloo", init_method=f"file://{tmp}/store",
                                rank=0, world_size=1)
        table = {}
        try:
            for case, (config, overrides, wrapper) in CASES.items():
                if a.quick and case == "GPT":
                    overrides = [*overrides, "model.n_layer=2", "train.batch_size=4"]
                batches, built, loss_fn, cfg = contenders(config, overrides, wrapper, device)
                per_round = {name: [] for name in built}
                iters = {name: endless(batches, 0) for name in built}  # the same batches for both
                for r in range(rounds + 1):
                    order = list(built) if r % 2 == 0 else list(reversed(built))  # alternate who goes first
                    for name in order:
                        model, step_model, optimizer = built[name]
                        times = time_steps(iters[name], model, step_model, optimizer, loss_fn,
                                           cfg.train.clip_grad_norm, steps, device)
                        if r > 0:  # round 0 warms up (allocator, kernels, NCCL communicators)
                            per_round[name].append(statistics.median(times))
                medians = {name: statistics.median(v) for name, v in per_round.items()}
                table[case] = {"config": config, "overrides": overrides, "wrapper": wrapper,
                               "batch_size": cfg.train.batch_size,
                               "step_ms_median": {k: v * 1e3 for k, v in medians.items()},
                               "step_ms_rounds": {k: [t * 1e3 for t in v] for k, v in per_round.items()},
                               "ratio": medians[wrapper] / medians["plain"]}
        finally:
            dist.destroy_process_group()
    report = {"environment": environment(sys.argv), "device": a.device, "steps": steps, "rounds": rounds,
              "cases": table}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("wrapper_bench_gpu.json" if a.device == "cuda" else "wrapper_bench.json")).write_text(
        json.dumps(report, indent=2) + "\n")
    for case, row in table.items():
        ms = row["step_ms_median"]
        print(f"{case:9s} plain {ms['plain']:8.2f} ms/step   {row['wrapper']} {ms[row['wrapper']]:8.2f} ms/step   "
              f"{row['ratio']:.3f}x")


if __name__ == "__main__":
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    main()
