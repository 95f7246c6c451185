"""The language model: trainlab's train() against a plain PyTorch loop over the same GPT and recipe.

    python bench/lm_bench.py                      # examples/shakespeare_char.yaml, 12 rounds of 25-step blocks
    python bench/lm_bench.py --full               # also both for the recipe's 2,000 steps: full-val loss curves
    python bench/lm_bench.py --quick              # 2 rounds of 10 steps: checks the bench runs
    python bench/lm_bench.py --variants           # also the plain loop compiled, in bf16, bf16 products,
                                                  # math attention, in blocks of 25 steps taken in turn

The yardstick is what a reader of nanoGPT writes: the same trainlab.gpt.GPT module built from the
same seed, the token stream resident as one tensor, `torch.randint` windows, AdamW(fused) with the
same decay groups, the warm-up + cosine schedule as a LambdaLR, gradient clipping, and a
`loss.backward(); opt.step(); opt.zero_grad()` loop. Both contenders run in this process in
blocks, taking turns: each block is a fresh run of 10 warm-up steps and 25 timed ones (ms per step:
the median of the block's timed steps), and the speed-up is the median over rounds of the plain
block's time over trainlab's. --full trains both for the whole recipe and scores the whole
val split every eval.every steps with the same windows (trainlab's own evaluation pass).

Writes OUT/lm_bench.json (with --variants: OUT/lm_bench_variants.json) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from run import environment  # noqa: E402  (bench/run.py: where and how the figures were taken)
from trainlab import data  # noqa: E402
from trainlab.config import load_config  # noqa: E402
from trainlab.data.loader import make_batches  # noqa: E402
from trainlab.gpt import decay_groups  # noqa: E402
from trainlab.models import build_model  # noqa: E402
from trainlab.passes import evaluate_model  # noqa: E402
from trainlab.runs import atomic_write_json  # noqa: E402
from trainlab.train import train  # noqa: E402

WARMUP = 10  # untimed steps at the start of every run: allocation, kernel choice, compilation
VARIANTS = ("compile", "bf16", "bf16-matmul", "math-attention")  # --variants: what else might make the step faster


def plain_stepper(cfg, splits, variant: str = "plain"):
    """The yardstick: nanoGPT's loop on trainlab's model, as (model, step): step() trains one batch.

    variant (--variants): "compile" wraps the model in torch.compile, "bf16" runs forward and loss
    under CPU bf16 autocast, "bf16-matmul" keeps float32 tensors but lets oneDNN multiply float32
    matrices in bf16 (torch.set_float32_matmul_precision("medium"), forward and backward),
    "math-attention" forces SDPA's math kernel instead of the flash one.
    """
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.input_shape, splits.num_classes)
    forward = torch.compile(model) if variant == "compile" else model
    if variant == "bf16":
        context = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    elif variant == "math-attention":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        context = lambda: sdpa_kernel(SDPBackend.MATH)  # noqa: E731
    elif variant == "bf16-matmul":
        context = lambda: matmul_precision("medium")  # noqa: E731
    else:
        context = contextlib.nullcontext
    o, s = cfg.optim, cfg.schedule
    opt = torch.optim.AdamW(decay_groups(model, o.weight_decay), lr=o.lr, betas=o.betas, fused=True)
    total, warm = cfg.train.steps, s.warmup_steps or 0

    def lr_factor(step: int) -> float:  # linear warm-up from warmup_start, then cosine to min_lr
        if step < warm:
            return s.warmup_start + (1 - s.warmup_start) * step / warm
        t = (step - warm) / max(total - warm, 1)
        return (s.min_lr + (o.lr - s.min_lr) * (1 + math.cos(math.pi * t)) / 2) / o.lr

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ids, T, B = splits.train.ids, cfg.model.block_size, cfg.train.batch_size
    gen = torch.Generator().manual_seed(cfg.train.seed)

    def step() -> None:
        starts = torch.randint(0, len(ids) - T, (B,), generator=gen)
        rows = ids[starts[:, None] + torch.arange(T + 1)]
        x, y = rows[:, :-1], rows[:, 1:]
        with context():
            loss = F.cross_entropy(forward(x).flatten(0, 1), y.flatten())
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    return model, step


@contextlib.contextmanager
def matmul_precision(precision: str):
    """torch.set_float32_matmul_precision for a block ("medium": oneDNN may multiply in bf16)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def plain_loop(cfg, splits, steps: int, on_eval=None) -> list[float]:
    """The yardstick for `steps` steps; returns each step's seconds (on_eval every eval.every steps)."""
    model, step = plain_stepper(cfg, splits)
    seconds = []
    for i in range(steps):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
        if on_eval is not None and (i + 1) % cfg.eval.every == 0:
            on_eval(i + 1, model)
    return seconds


def variant_blocks(cfg, splits, rounds: int, block: int = 25) -> dict:
    """The plain loop and each variant side by side in this process, in blocks of `block` steps
    taken in turn (reversed every other round), so that the machine's drift, which on a shared
    2-core VM moves step times by 30% over a minute, falls on every contender alike. Returns ms
    per step (median of each block) and, per variant, the median over rounds of plain / variant."""
    names = ("plain",) + VARIANTS
    steppers = {name: plain_stepper(cfg, splits, name)[1] for name in names}
    for step in steppers.values():  # compilation and kernel choice, untimed
        for _ in range(WARMUP):
            step()
    ms = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds = []
            for _ in range(block):
                t0 = time.perf_counter()
                steppers[name]()
                seconds.append(time.perf_counter() - t0)
            ms[name].append(statistics.median(seconds) * 1e3)
    ratios = {v: statistics.median(p / q for p, q in zip(ms["plain"], ms[v])) for v in VARIANTS}
    return {"block_steps": block, "rounds": rounds, "ms_per_step": ms, "plain_over_variant": ratios}


def trainlab_run(cfg, out: Path, splits=None) -> tuple[list[float], list[dict]]:
    """train() on the config; per-step seconds from the per-step hook (training only, as the plain loop)."""
    seconds, last = [], [time.perf_counter()]

    def tick(period, step):
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now

    def restart(period, row):  # evaluation time between periods is not a step
        last[0] = time.perf_counter()

    result = train(cfg, out=out, on_step_end=tick, on_epoch_end=restart, splits=splits)
    return seconds, result.history


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=25, help="timed steps per block (default 25)")
    p.add_argument("--repeats", type=int, default=12, help="rounds of one block each (default 12)")
    p.add_argument("--full", action="store_true", help="also the whole recipe, both ways, with val curves")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--variants", action="store_true",
                   help="also the plain loop compiled, under bf16 autocast, with bf16 matrix products and with "
                        "the math attention kernel")
    p.add_argument("--out", default=str(BENCH / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 10, 2
    example = ROOT / "examples/shakespeare_char.yaml"
    n = WARMUP + args.steps
    cfg = load_config(example, ["train.progress=none", f"train.steps={n}", f"eval.every={n}", "eval.limit=1"])
    splits = data.load(cfg)
    runs = {"plain": [], "trainlab": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Blocks: a fresh run of WARMUP + steps steps each, the two contenders in turn (the order
        # reversed every other round): this VM's drift (30% over a minute) then falls on both alike.
        for r in range(args.repeats):
            for name in ("plain", "trainlab") if r % 2 == 0 else ("trainlab", "plain"):
                steps = plain_loop(cfg, splits, n) if name == "plain" else trainlab_run(cfg, Path(tmp) / f"{r}", splits)[0]
                runs[name].append(statistics.median(steps[WARMUP:]) * 1e3)
        record = {"env": environment(sys.argv[1:]), "config": str(example), "timed_steps": args.steps,
                  "rounds": args.repeats, "ms_per_step": runs,
                  "median_ms": {k: statistics.median(v) for k, v in runs.items()}}
        # The plain loop's time over trainlab's, per round, then the median over rounds: above 1 is faster.
        record["speedup"] = statistics.median(a / b for a, b in zip(runs["plain"], runs["trainlab"]))
        if args.variants:  # the plain loop's time over each variant's: above 1 is faster
            record["variants"] = variant_blocks(cfg, splits, args.repeats, args.steps)
        if args.full:
            full = load_config(example, ["train.progress=none"])
            val = make_batches(splits, "val", full.eval.batch_size, torch.device("cpu"), torch.float32, full)
            loss_fn = lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten())  # noqa: E731
            curve = []
            t0 = time.perf_counter()
            plain_loop(full, splits, full.train.steps, on_eval=lambda step, m: curve.append(
                (step, evaluate_model(m, val, loss_fn, "language_model", "cross_entropy")["loss"])))
            plain_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, history = trainlab_run(full, Path(tmp) / "full")
            record["full"] = {"plain_val_loss": curve, "trainlab_val_loss": [(r["step"], r["val_loss"]) for r in history],
                              "plain_seconds": plain_seconds, "trainlab_seconds": time.perf_counter() - t0,
                              "trainlab_training_seconds": sum(r["seconds"] for r in history)}
    out = Path(args.out)
    if not args.quick:
        atomic_write_json(out / ("lm_bench_variants.json" if args.variants else "lm_bench.json"), record)
    print(f"ms per step, {args.repeats} rounds of {args.steps}-step blocks: medians plain "
          f"{record['median_ms']['plain']:.2f}, trainlab {record['median_ms']['trainlab']:.2f}; the plain loop's "
          f"time / trainlab's, median over rounds: {record['speedup']:.2f}x")
    if "variants" in record:
        v = record["variants"]
        for name, ratio in v["plain_over_variant"].items():
            print(f"plain loop, {name}: {statistics.median(v['ms_per_step'][name]):.2f} ms per step against "
                  f"{statistics.median(v['ms_per_step']['plain']):.2f}; the plain loop's time / its: {ratio:.2f} "
                  f"(median of {v['rounds']} rounds of {v['block_steps']}-step blocks)")
    if "full" in record:
        f = record["full"]
        for (step, a), (_, b) in zip(f["plain_val_loss"], f["trainlab_val_loss"]):
            print(f"step {step}: val loss plain {a:.4f}, trainlab {b:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
