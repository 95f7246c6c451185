"""Where an epoch's time goes: one trainlab epoch of the seed MLP under torch.profiler, by category.

    python bench/profile_step.py [--batch-size 64] [--limit 54000]
    python bench/profile_step.py --config examples/shakespeare_char.yaml --top 10   # 200 GPT steps

Categories (self CPU time of the ops each holds): matmul (mm/addmm/bmm, the arithmetic), optimizer
(the step: fused kernel + Python around it), autograd (the backward engine's own nodes and the
elementwise backward ops), forward elementwise (relu, log_softmax, nll), data (gathering and
converting batches), bookkeeping (running metric sums) and the rest. A profiler adds its own
per-op overhead, so the shares matter, not the absolute times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainlab.config import load_config  # noqa: E402
from trainlab.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")),
    ("attention (GPT)", ("scaled_dot_product",)),
    ("GELU (GPT)", ("aten::gelu",)),
    ("LayerNorm (GPT)", ("layer_norm",)),
    ("optimizer", ("Optimizer.", "aten::_fused_", "aten::_foreach_")),
    ("forward elementwise", ("aten::relu", "aten::clamp_min", "aten::_log_softmax", "aten::nll_loss_forward")),
    ("backward elementwise", ("aten::threshold_backward", "aten::_log_softmax_backward", "aten::nll_loss_backward",
                              "autograd::", "AddmmBackward", "torch::autograd", "aten::sum", "Backward")),
    ("data: gather + convert", ("aten::index", "aten::to", "aten::_to_copy", "aten::copy_", "aten::slice")),
    ("bookkeeping: metric sums", ("aten::argmax", "aten::eq", "aten::add_", "aten::mul", "aten::select",
                                  "aten::fill_", "aten::isfinite")),
]


def category(name: str) -> str:
    for label, prefixes in CATEGORIES:
        if any(name.startswith(p) or p in name for p in prefixes):
            return label
    return "other (views, allocation, dispatch)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples/seed_mlp.yaml"),
                        help="the config to profile (a gpt config: 200 steps of its recipe)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's (seed MLP: 64)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--top", type=int, default=0, help="also list the N ops with the most self CPU time")
    args = parser.parse_args()
    overrides = ["train.progress=none"]
    if args.batch_size:
        overrides.append(f"train.batch_size={args.batch_size}")
    if load_config(args.config).model.name == "gpt":  # a step budget: one period of 200 steps
        overrides += ["train.steps=200", "eval.every=200", "eval.limit=1"]
    else:
        overrides += ["train.epochs=1", "data.val_fraction=0.1"]
    if args.limit:
        overrides.append(f"data.limit={args.limit}")
    cfg = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, out=Path(tmp) / "warm")  # warm-up: imports, allocator, MKL
        plain = train(cfg, out=Path(tmp) / "plain").history[0]["seconds"]
        # Profile the training steps only (not data loading, validation or the final evaluation):
        # start after the first step, stop at the end of the epoch.
        prof = profile(activities=[ProfilerActivity.CPU])
        state = {"started": False}

        def start(epoch: int, step: int) -> None:
            if not state["started"]:
                state["started"] = True
                prof.start()

        train(cfg, out=Path(tmp) / "profiled", on_step_end=start, on_epoch_end=lambda e, r: prof.stop())
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        totals[category(event.key)] += event.self_cpu_time_total / 1e6
    whole = sum(totals.values())
    print(f"{cfg.name}, batch {cfg.train.batch_size}, one epoch: {plain:.3f} s unprofiled "
          f"({torch.get_num_threads()} threads); self CPU time of the training steps under the profiler "
          f"{whole:.3f} s")
    print("| category | share of self CPU time |")
    print("|---|---:|")
    for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {100 * seconds / whole:.0f}% |")
    if args.top:
        print("\n| op | category | calls | self CPU ms | share |")
        print("|---|---|---:|---:|---:|")
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:args.top]
        for e in events:
            print(f"| {e.key} | {category(e.key)} | {e.count} | {e.self_cpu_time_total / 1e3:.1f} "
                  f"| {100 * e.self_cpu_time_total / 1e6 / whole:.0f}% |")


if __name__ == "__main__":
    main()
