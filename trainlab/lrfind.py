"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's lr_find).

    >>> found = lr_find("examples/seed_mlp.yaml")
    >>> found["suggested_lr"], found["override"]          # e.g. 0.05, 'optim.lr=0.05'

From a fresh model and optimiser of the config, the learning rate rises exponentially from
`min_lr` to `max_lr` over `steps` mini-batches (one optimiser step each, through
trainlab.train.train_step), and the training loss of every step is recorded. The loss is
smoothed by an exponential moving average with bias correction (beta 0.98, as fastai), and the
test stops early once the smoothed loss exceeds 4x the lowest smoothed loss so far (divergence)
or a loss is NaN/inf.

Two rules read the curve, both on the smoothed loss against log10(lr):

- **suggested_lr, the steepest descent**: the lr where the smoothed loss falls fastest (the most
  negative slope of smoothed loss vs log10 lr), searched only between the first 10% of the steps
  (where the moving average is still settling and the loss barely moves) and the lowest point of
  the curve (past it the loss is rising: not a descent). Here training makes the fastest progress
  per step while still being stable.
- **safe_lr, minimum / 10**: one tenth of the lr at the lowest smoothed loss. At the minimum the lr
  is already at the edge of stability; a tenth of it is the conservative choice (fastai's
  "minimum/10").

The config's schedule (warm-up, decay) is not used: the range test drives the lr itself.
Writes into OUT (default runs/<name>-lr-find-<timestamp>): config.yaml, lr_find.json, lr_find.png
and report.html.
"""

from __future__ import annotations

import io
import itertools
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import data
from .config import Config, save_config
from .crossval import derive, output_dir, prepare, say
from .errors import ConfigError
from .runs import atomic_write_bytes, atomic_write_json, atomic_write_text

BETA = 0.98           # smoothing of the loss: exponential moving average, bias-corrected
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss exceeds this many times its lowest value
SKIP_START = 0.1      # fraction of the steps ignored at the start by the steepest-descent rule


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """ConfigError (exit 2) for an empty or non-positive lr range or too few steps."""
    if not (math.isfinite(min_lr) and math.isfinite(max_lr)) or min_lr <= 0 or max_lr <= 0:
        raise ConfigError(f"--min-lr {min_lr} and --max-lr {max_lr} must both be positive and finite "
                          "(the lr rises exponentially between them), e.g. --min-lr 1e-7 --max-lr 10.")
    if min_lr >= max_lr:
        raise ConfigError(f"--min-lr {min_lr} must be smaller than --max-lr {max_lr}, "
                          "e.g. --min-lr 1e-7 --max-lr 10.")
    if steps < 10:
        raise ConfigError(f"--steps {steps}: the range test needs at least 10 steps (a few hundred is usual).")


def smooth(loss: np.ndarray, beta: float = BETA) -> np.ndarray:
    """Bias-corrected exponential moving average: avg_t = beta·avg_{t-1} + (1-beta)·loss_t,
    smoothed_t = avg_t / (1 - beta^(t+1))."""
    out, avg = np.empty(len(loss)), 0.0
    for t, value in enumerate(loss):
        avg = beta * avg + (1 - beta) * value
        out[t] = avg / (1 - beta ** (t + 1))
    return out


def suggest(lrs: np.ndarray, smoothed: np.ndarray, skip_start: float = SKIP_START) -> dict:
    """The two rules of the module docstring on a recorded curve: {suggested_lr, safe_lr, min_loss_lr,
    and the indices of the points}."""
    finite = np.isfinite(smoothed)
    lowest = int(np.nanargmin(np.where(finite, smoothed, np.nan)))
    start = min(int(len(lrs) * skip_start), max(lowest - 1, 0))
    region = slice(start, lowest + 1)
    if lowest - start >= 2:
        slope = np.gradient(smoothed[region], np.log10(lrs[region]))
        steepest = start + int(np.argmin(slope))
    else:  # the loss never fell: no descent to read; the lowest point is all there is
        steepest = lowest
    return {"suggested_lr": float(lrs[steepest]), "safe_lr": float(lrs[lowest]) / 10,
            "min_loss_lr": float(lrs[lowest]), "steepest_index": steepest, "min_index": lowest}


def lr_find(config: Config | dict | str | Path, min_lr: float = 1e-7, max_lr: float = 10.0, steps: int = 300,
            out: Optional[str | Path] = None, data_dir: Optional[str] = None) -> dict:
    """Run the learning-rate range test on `config`; returns lr_find.json's object.

    >>> found = lr_find("examples/seed_mlp.yaml", steps=200)
    >>> found["suggested_lr"], found["safe_lr"], found["plot"]
    """
    check_range(min_lr, max_lr, steps)
    cfg = prepare(config)
    from .train import build_setup

    splits = data.load(cfg, data_dir)
    path = output_dir(out, f"{cfg.name}-lr-find")
    save_config(cfg, path / "config.yaml")

    # The model, loss, penalty, batches and optimiser exactly as train() builds them (on either
    # train.backend); only the lr differs: min_lr, raised by gamma after every step.
    constant = derive(cfg, {"optim.lr": min_lr, "schedule.name": "constant", "schedule.warmup_epochs": 0.0,
                            "schedule.warmup_steps": None})
    s = build_setup(constant, None, data_dir, splits, None, None, None)
    s.model.train()
    optimizer, batches = s.optimizer, s.train_batches
    # lr of step t (0-based) = min_lr · gamma^t: min_lr at the first step, max_lr at the last.
    gamma = (max_lr / min_lr) ** (1 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)

    lrs, raw, smoothed = [], [], []
    avg, best, stopped = 0.0, math.inf, "steps"
    start = time.perf_counter()
    stream = (b for epoch in itertools.count(1) for b in batches.epoch(cfg.train.seed, epoch))
    for t, batch in zip(range(steps), stream):
        lr = optimizer.param_groups[0]["lr"]
        with s.autocast:
            loss, _ = s.step_fn(s.step_model, batch, s.loss_fn, optimizer, s.penalty, cfg.train.clip_grad_norm,
                                **s.step_kwargs)
        value = float(loss)  # one host sync per step: a few hundred steps
        lrs.append(lr)
        raw.append(value)
        if not math.isfinite(value):
            smoothed.append(math.nan)
            stopped = "diverged"
            break
        avg = BETA * avg + (1 - BETA) * value
        smoothed.append(avg / (1 - BETA ** (t + 1)))
        best = min(best, smoothed[-1])
        if smoothed[-1] > DIVERGE_FACTOR * best:
            stopped = "diverged"
            break
        scheduler.step()
    seconds = time.perf_counter() - start

    lr_arr, sm_arr = np.asarray(lrs), np.asarray(smoothed, float)
    if not np.isfinite(sm_arr).any():
        raise ConfigError(f"The loss was not finite even at --min-lr {min_lr}: lower --min-lr, or check the "
                          "data and config with `trainlab train --smoke`.")
    picks = suggest(lr_arr, sm_arr)
    plot_file = path / "lr_find.png"
    found = {
        "suggested_lr": picks["suggested_lr"], "safe_lr": picks["safe_lr"], "min_loss_lr": picks["min_loss_lr"],
        "override": f"optim.lr={picks['suggested_lr']:.3g}", "plot": str(plot_file),
        "report": str(path / "report.html"), "out_dir": str(path),
        "rule": "suggested_lr: steepest descent of the smoothed loss vs log10(lr), between the first "
                f"{SKIP_START:.0%} of the steps and the lowest point; safe_lr: the lr at the lowest smoothed "
                "loss / 10",
        "stopped_because": stopped, "steps_run": len(lrs), "steps": steps, "min_lr": min_lr, "max_lr": max_lr,
        "beta": BETA, "diverge_factor": DIVERGE_FACTOR, "optimizer": cfg.optim.name, "batch_size": batches.batch_size,
        "seconds": seconds, "lr": lrs, "loss": raw, "smoothed_loss": smoothed,
    }
    fig = plot_lr_find(lr_arr, np.asarray(raw, float), sm_arr, picks)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    atomic_write_bytes(plot_file, buf.getvalue())
    atomic_write_json(path / "lr_find.json", found)
    atomic_write_text(path / "report.html", render_lr_report(found, path, fig))
    say(f"lr-find: {len(lrs)} steps ({stopped}) in {seconds:.1f}s; suggested lr {found['suggested_lr']:.3g} "
        f"(steepest descent), safe lr {found['safe_lr']:.3g} (minimum / 10)")
    return found


def format_lr_find(found: dict) -> str:
    """The lines `trainlab lr-find` prints; the last is the override to paste."""
    return (f"suggested lr: {found['suggested_lr']:.3g} (steepest descent of the smoothed loss)\n"
            f"safe lr:      {found['safe_lr']:.3g} (lr at the minimum loss {found['min_loss_lr']:.3g}, / 10)\n"
            f"plot: {found['plot']}\nreport: {found['report']}\n{found['override']}")


def plot_lr_find(lrs: np.ndarray, loss: np.ndarray, smoothed: np.ndarray, picks: dict):
    """Loss against lr (log x): raw loss faint, smoothed loss solid, the suggested (steepest) lr and
    the safe lr (minimum / 10) marked; the y range is clipped to the interesting part."""
    from .report import new_figure

    fig, ax = new_figure((6.0, 4.0))
    ax.plot(lrs, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss per step")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=1.8, label="smoothed loss")
    i, j = picks["steepest_index"], picks["min_index"]
    ax.plot([lrs[i]], [smoothed[i]], "o", color="tab:red", markersize=7,
            label=f"suggested {lrs[i]:.3g} (steepest)")
    ax.axvline(lrs[i], color="tab:red", linestyle=":", linewidth=1)
    ax.plot([lrs[j]], [smoothed[j]], "v", color="grey", markersize=7, label=f"minimum at {lrs[j]:.3g}")
    ax.axvline(picks["safe_lr"], color="tab:green", linestyle="--", linewidth=1,
               label=f"safe {picks['safe_lr']:.3g} (minimum / 10)")
    finite = smoothed[np.isfinite(smoothed)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite[: max(1, len(finite) // 10)].max())
        top = max(hi, lo) + 0.25 * (max(hi, lo) - lo) + 1e-12
        ax.set_ylim(lo - 0.1 * (top - lo), top)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return fig


def render_lr_report(found: dict, path: Path, fig) -> str:
    """lr_find.json as one self-contained page in report.py's style."""
    from .report import escape, html_image, html_note, html_page, html_section, html_table

    table = html_table(["", "value"], [
        ("suggested lr (steepest descent)", found["suggested_lr"]), ("safe lr (minimum / 10)", found["safe_lr"]),
        ("lr at the minimum loss", found["min_loss_lr"]), ("steps run", found["steps_run"]),
        ("stopped because", found["stopped_because"]), ("lr range", f"{found['min_lr']:g} – {found['max_lr']:g}"),
        ("optimiser", found["optimizer"]), ("batch size", found["batch_size"]), ("seconds", found["seconds"])])
    paste = html_note("Paste the suggestion as an override: ", f"trainlab train -c {path / 'config.yaml'} "
                      f"{found['override']}")
    sections = [html_section("suggestion", "Suggested learning rate", table + paste + html_note(found["rule"] + "."))]
    sections.append(html_section("curve", "Loss against learning rate", html_image(fig, "loss against learning rate")))
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else ""
    sections.append(html_section("config", "Config", f"<pre>{escape(config_text)}</pre>"))
    return html_page(f"trainlab lr-find: {path.name}", escape(f"{path} · {found['override']}"), sections)
