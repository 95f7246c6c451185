"""check(config) -> dict: a dry run before training (config diff, data, model summary, step timing); writes nothing."""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from . import data
from .config import Config
from .data.loader import make_batches
from .errors import ConfigError
from .train import Setup, build_setup, prepare_config

WARMUP_STEPS = 2        # untimed: the first steps allocate, pick kernels, take torch.optim's own step()
TIME_BUDGET_S = 2.0     # timed training steps stop after this much time (at least MIN_TIMED_STEPS)
EVAL_BUDGET_S = 1.0     # the same for the evaluation batches
MIN_TIMED_STEPS = 3
MAC_NOTE = ("multiply-accumulates of matrix products and convolutions (torch.utils.flop_counter FLOPs / 2); "
            "elementwise layers (activations, normalisation, pooling, dropout) count 0")


def check(config: Config | dict | str | Path, *, data_dir: Optional[str] = None,
          out: Optional[str | Path] = None, steps: int = 10, pretrain: bool = False) -> dict:
    """Resolve the config, load the data, summarise the model and time a few training steps.

    `pretrain`: of what `trainlab pretrain` would do instead (the encoder in its objective's module).

    Raises what train() raises for the same input (ConfigError: exit 2, DataError: exit 3).
    Nothing is written except `out`/check.json when `out` is given; the timed steps train a
    copy of the model, outside any run directory.

    >>> result = check("examples/seed_mlp.yaml")
    >>> result["model"]["params"], result["model"]["macs_per_example"]   # (101770, 101632)
    >>> print(format_check(result))
    """
    from .models import count_parameters

    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}.")
    cfg = prepare_config(config)
    warnings: list[str] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    threads_before = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        t0 = time.perf_counter()
        model = loss_fn = step_fn = None
        if pretrain:
            from .pretrain import pretraining_parts
            splits, model, loss_fn, step_fn = pretraining_parts(cfg, data_dir, search=False)
        else:
            splits = data.load(cfg, data_dir)
        load_seconds = time.perf_counter() - t0
        # What train() trains with: the model from the seed, batches, loss, optimiser, schedule.
        setup = build_setup(cfg, None, data_dir, splits, model, loss_fn, step_fn)
        tokens = splits.task == "language_model"
        loss = {"contrastive": "nt_xent", "masked": "masked_mse"}[cfg.pretrain.objective] if pretrain else setup.loss_name
        shown = setup.model.torch_twin() if cfg.train.backend == "keras" else setup.model  # the same layers
        summary = {"name": cfg.model.name, "loss": loss, "params": count_parameters(shown),
                   **summarize(shown, splits.input_shape, torch.long if tokens else setup.dtype)}

        timing = _time_steps(setup, steps, warnings)
        if pretrain and step_fn is not None:  # positives=neighbours: the search before the first step
            from .neighbours import search_seconds
            search, cached = search_seconds(splits.train.x, cfg.pretrain.neighbours)
            timing.update(neighbour_search_seconds=search, neighbours_cached=cached,
                          run_seconds=timing["run_seconds"] + search)
    finally:
        torch.set_num_threads(threads_before)
    if timing["device"] == "cpu" and load > cores:
        warnings.append(f"the load average was {load:.1f} on {cores} CPU cores: other processes share them, "
                        "so the timings (and estimates) are pessimistic.")
    if cfg.train.compile:  # the timed steps ran compiled; compiling is a one-off the estimates leave out
        warnings.append(f"train.compile=true: the {WARMUP_STEPS} warm-up steps took {timing['warmup_seconds']:.1f} s "
                        "with compilation (left out of the estimates); the timed steps ran compiled.")

    result = {
        "name": cfg.name,
        "config": {"diff": config_diff(cfg)},
        "data": _describe_data(cfg, splits, data_dir, load_seconds),
        "model": summary,
        "timing": timing,
        "warnings": warnings,
        "out": None,
    }
    if out is not None:
        from .runs import atomic_write_json
        path = Path(out) / "check.json"
        result["out"] = str(path)
        atomic_write_json(path, result)
    return result


# ---------------------------------------------------------------- config

def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_diff(cfg: Config) -> dict[str, dict[str, Any]]:
    """{dotted key: {"value": v, "default": d}} for every key whose resolved value is not the default."""
    resolved, default = _flatten(cfg.to_dict()), _flatten(Config().to_dict())
    return {k: {"value": v, "default": default.get(k)} for k, v in resolved.items() if default.get(k) != v}


# ---------------------------------------------------------------- data

def _describe_data(cfg: Config, splits: data.Splits, data_dir: Optional[str], load_seconds: float) -> dict:
    from .data import cifar, idx
    from .data.locate import data_roots

    d = cfg.data
    root = None
    if d.name in idx.BASE_URLS or d.name in cifar.LAYOUT:
        # data.load used the first root holding ROOT/<name> (locate's rule), possibly just downloaded.
        roots = data_roots(data_dir or d.dir)
        root = next((r for r in roots if (r / d.name).is_dir()), None)
        source = str(root / d.name) if root is not None else d.name
    elif d.name in ("imagefolder", "csv"):
        source = str(Path(d.path).expanduser())
    else:
        source = f"scikit-learn's bundled dataset (sklearn.datasets.load_{d.name})"
    sizes = {name: (len(s) if s is not None else 0) for name, s in
             (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    return {
        "name": d.name, "source": source, "root": str(root) if root is not None else None,
        "task": splits.task, "splits": sizes, "input_shape": list(splits.input_shape),
        "num_classes": splits.num_classes, "classes": splits.classes,
        "stream": isinstance(splits.train, data.FileSplit) or d.loader == "stream",
        "load_seconds": load_seconds,
    }


# ---------------------------------------------------------------- model

def summarize(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> dict:
    """Layers (output shape per example, trainable parameters, MACs) from one forward pass on one zero example.

    Layers are the leaf modules plus any module holding parameters of its own. MACs come from
    torch.utils.flop_counter.FlopCounterMode, attributed per module by its ModuleTracker.

    >>> summarize(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28))["macs_per_example"]
    7840
    """
    from torch.utils.flop_counter import FlopCounterMode

    root = type(model).__name__
    layers = [(name, m) for name, m in model.named_modules()
              if not any(True for _ in m.children()) or any(True for _ in m.parameters(recurse=False))]
    shapes: dict[str, Any] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            if name not in shapes:  # a module called twice (a shared activation) keeps its first output
                shapes[name] = _shape(output)
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in layers]
    modes = [(m, m.training) for m in model.modules()]
    param = next(iter(model.parameters()), None)
    example = torch.zeros((1, *input_shape), dtype=dtype,
                          device=param.device if param is not None else torch.device("cpu"))
    model.eval()  # BatchNorm cannot normalise a batch of one in training mode
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            output = model(example)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    totals = {key: sum(ops.values()) for key, ops in counter.get_flop_counts().items()}

    def flops(name: str) -> int:
        return totals.get(f"{root}.{name}" if name else root, 0)

    rows, counted = [], set()  # a weight shared by two layers (a GPT's tied embedding and head) counts once
    for name, m in layers:
        own = flops(name) - sum(flops(f"{name}.{child}" if name else child) for child, _ in m.named_children())
        params = [p for p in m.parameters(recurse=False) if p.requires_grad and id(p) not in counted]
        counted.update(id(p) for p in params)
        rows.append({"name": name or root, "type": type(m).__name__, "output_shape": shapes.get(name),
                     "params": sum(p.numel() for p in params), "macs": own // 2})
    macs = counter.get_total_flops() // 2
    return {"layers": rows, "output_shape": _shape(output), "macs_per_example": macs,
            "unattributed_macs": macs - sum(r["macs"] for r in rows), "macs_note": MAC_NOTE}


def _shape(output: Any) -> Any:
    """Per-example shape (batch dimension dropped) of a tensor, or a list of them for a tuple/list."""
    if isinstance(output, torch.Tensor):
        return list(output.shape[1:])
    if isinstance(output, (tuple, list)):
        return [_shape(o) for o in output]
    return type(output).__name__


# ---------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(s: Setup, steps: int, warnings: list[str]) -> dict:
    """Median seconds of the run's own training step (on the model check built, thrown away after),
    and the epoch and run times they imply."""
    cfg, device = s.cfg, s.device
    batch_size = s.train_batches.batch_size  # examples (or windows) per optimiser step, as train() batches
    steps_per_epoch = len(s.train_batches)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def batches():
        epoch = 1
        while True:
            yield from s.train_batches.epoch(cfg.train.seed, epoch)
            epoch += 1

    seconds, step_losses, warmup_seconds = [], [], 0.0
    stream = batches()
    s.model.train()
    for i in range(WARMUP_STEPS + steps):
        t = time.perf_counter()
        batch = next(stream)
        with s.autocast:
            loss, _ = s.step_fn(s.forward_model, batch, s.loss_fn, s.optimizer, s.penalty, cfg.train.clip_grad_norm,
                                **s.step_kwargs)
        _sync(device)
        if i < WARMUP_STEPS:
            warmup_seconds += time.perf_counter() - t
        else:
            seconds.append(time.perf_counter() - t)
            step_losses.append(float(loss))
            if sum(seconds) > TIME_BUDGET_S and len(seconds) >= MIN_TIMED_STEPS:
                break
    stream.close()
    per_step = statistics.median(seconds)
    if not all(math.isfinite(v) for v in step_losses):
        warnings.append(f"the loss became non-finite within {len(seconds) + WARMUP_STEPS} steps "
                        f"({step_losses[-1]}): training would diverge. Lower optim.lr (now {cfg.optim.lr}).")

    eval_seconds = _time_eval(s)
    eval_steps = {name: len(make_batches(s.splits, name, cfg.eval.batch_size, device, s.dtype, cfg) or [])
                  for name in ("train", "val", "test")}
    val_seconds = eval_steps["val"] * eval_seconds
    epoch_seconds = steps_per_epoch * per_step + val_seconds
    final_eval = sum(eval_steps.values()) * eval_seconds  # train() scores every split once at the end
    timing = {
        "device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "batch_size": batch_size, "warmup_steps": WARMUP_STEPS, "warmup_seconds": warmup_seconds,
        "steps_timed": len(seconds),
        "seconds_per_step": per_step, "examples_per_second": batch_size / per_step,
        "loss_first": step_losses[0], "loss_last": step_losses[-1],
        "steps_per_epoch": steps_per_epoch, "eval_batch_size": cfg.eval.batch_size,
        "eval_seconds_per_batch": eval_seconds, "val_batches": eval_steps["val"],
        "val_seconds": val_seconds, "epoch_seconds": epoch_seconds, "epochs": s.rounds,
        "final_eval_seconds": final_eval, "run_seconds": s.rounds * epoch_seconds + final_eval,
        "early_stopping": cfg.train.early_stopping.patience is not None,
        "step_budget": cfg.train.steps,  # train.steps: an "epoch" is the period between two evaluations
    }
    if device.type == "cuda":
        timing["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return timing


@torch.no_grad()
def _time_eval(s: Setup) -> float:
    """Median seconds of one evaluation batch (forward only, eval mode) of val (or test)."""
    name = "val" if s.splits.val is not None else "test"
    batches = make_batches(s.splits, name, s.cfg.eval.batch_size, s.device, s.dtype, s.cfg)
    s.model.eval()

    def forward(x: torch.Tensor) -> None:
        with s.autocast:
            s.forward_model(x)
        _sync(s.device)

    seconds = []
    for i, (x, _) in enumerate(batches.epoch()):
        if i == 0:  # a warm-up pass first, untimed: kernel choice (and compilation with train.compile)
            forward(x)
        t = time.perf_counter()
        forward(x)
        seconds.append(time.perf_counter() - t)
        if sum(seconds) > EVAL_BUDGET_S:
            break
    return statistics.median(seconds)


# ---------------------------------------------------------------- text

def _seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                             enumerate(zip(r, widths))).rstrip() for r in rows]


def format_check(result: dict) -> str:
    """The check as text for a terminal: config diff, data, the layer table, timing and estimates."""
    lines = []
    diff = result["config"]["diff"]
    lines.append(f"config {result['name']}: {len(diff)} key{'s' if len(diff) != 1 else ''} differ from the defaults")
    if diff:
        lines += _table([[k, repr(v["value"]), f"(default {v['default']!r})"] for k, v in diff.items()], set())

    d = result["data"]
    lines.append("")
    lines.append(f"data {d['name']} ({d['task']}) from {d['source']}" + (", streamed" if d["stream"] else "")
                 + f": loaded and verified in {_seconds(d['load_seconds'])}")
    sizes = ", ".join(f"{k} {v:,}" for k, v in d["splits"].items())
    classes = ""
    if d["classes"]:
        shown = ", ".join(d["classes"][:10]) + (", ..." if len(d["classes"]) > 10 else "")
        classes = f"; {d['num_classes']} classes: {shown}"
    lines.append(f"  {sizes}; input {tuple(d['input_shape'])}{classes}")

    m = result["model"]
    lines.append("")
    lines.append(f"model {m['name']} (loss {m['loss']}): {m['params']:,} parameters, "
                 f"{m['macs_per_example']:,} multiply-accumulates per example")
    rows = [["layer", "type", "output shape", "params", "MACs"]]
    for r in m["layers"]:
        shape = r["output_shape"]
        shape = "not called" if shape is None else str(tuple(shape)) if all(isinstance(s, int) for s in shape) \
            else str(shape)
        rows.append([r["name"], r["type"], shape, f"{r['params']:,}", f"{r['macs']:,}"])
    if m["unattributed_macs"]:
        rows.append(["(outside layers)", "", "", "", f"{m['unattributed_macs']:,}"])
    rows.append(["total", "", str(tuple(m["output_shape"])) if isinstance(m["output_shape"], list) else "",
                 f"{m['params']:,}", f"{m['macs_per_example']:,}"])
    lines += _table(rows, {3, 4})
    lines.append(f"  MACs: {m['macs_note']}.")

    t = result["timing"]
    lines.append("")
    where = f"{t['device']}, {t['threads']} threads" if t["threads"] else t["device"]
    lines.append(f"timing on {where}: {t['steps_timed']} steps of batch {t['batch_size']} after "
                 f"{t['warmup_steps']} warm-up, median {_seconds(t['seconds_per_step'])} per step "
                 f"({t['examples_per_second']:,.0f} examples/s); loss {t['loss_first']:.4g} -> {t['loss_last']:.4g}")
    val = (f" + val {t['val_batches']} x {_seconds(t['eval_seconds_per_batch'])}" if t["val_batches"] else "")
    # With a step budget (train.steps) a metrics row closes each evaluation period, not an epoch.
    unit = "evaluation period" if t.get("step_budget") else "epoch"
    lines.append(f"  {unit} ~ {t['steps_per_epoch']:,} steps x {_seconds(t['seconds_per_step'])}{val} "
                 f"= {_seconds(t['epoch_seconds'])}")
    rounds = f"{t['epochs']} {unit}s" + (f" ({t['step_budget']:,} steps)" if t.get("step_budget") else "")
    search = ""
    if "neighbour_search_seconds" in t:
        search = (" + neighbour search 0 s (cached)" if t["neighbours_cached"] else
                  f" + neighbour search ~{_seconds(t['neighbour_search_seconds'])}")
    lines.append(f"  run ~ {rounds}{' (at most: early stopping)' if t['early_stopping'] else ''} "
                 f"+ final evaluation {_seconds(t['final_eval_seconds'])}{search} = {_seconds(t['run_seconds'])}")
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    if result["out"]:
        lines.append(f"check: {result['out']}")
    return "\n".join(lines)
