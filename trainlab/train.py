"""train(config) -> Result: the training loop, one plain function; train_step() calls backward()."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import checkpoint, data, losses
from .config import Config, build_config, load_config, save_config
from .data.loader import Batches, make_batches
from .errors import ConfigError, DivergedError, Interrupted
from .optim import build_optimizer, build_scheduler, is_better, step_optimizer
from .runs import RunDir, atomic_write_json, code_version


@dataclass
class Result:
    """What train() returns: the run directory, summary.json's object, the curves and the model."""

    run_dir: Path
    summary: dict
    history: list[dict]
    model: torch.nn.Module = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.summary["metrics"]


def train_step(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], loss_fn: losses.LossFn,
               optimizer: torch.optim.Optimizer, penalty: Optional[Callable[[], torch.Tensor]] = None,
               clip_grad_norm: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch; returns (loss, output), both detached.

    The only place in trainlab that calls backward(). A custom step passed to train() has this
    signature. The returned loss excludes the L1/L2 penalty, so curves compare across penalties.
    """
    x, y = batch
    output = model(x)                        # (B, K) logits, or (B, 1)
    loss = loss_fn(output, y)                # mean over the batch
    objective = loss + penalty() if penalty is not None else loss
    objective.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    step_optimizer(optimizer)                # optimizer.step(); gradients set to None
    return loss.detach(), output.detach()


def make_penalty(cfg: Config, model: torch.nn.Module) -> Optional[Callable[[], torch.Tensor]]:
    """l1 * sum|w| + l2/2 * sum w^2 over weight matrices and kernels (not biases or norm layers).

    With l2 alone the gradient is l2 * w: for plain SGD the same update as optim.weight_decay=l2.
    """
    l1, l2 = cfg.regularize.l1, cfg.regularize.l2
    if not (l1 or l2):
        return None
    from .models import weight_parameters
    weights = weight_parameters(model)

    def penalty() -> torch.Tensor:
        total = 0.0
        if l1:
            total = total + l1 * sum(w.abs().sum() for w in weights)
        if l2:
            total = total + (l2 / 2) * sum(w.pow(2).sum() for w in weights)
        return total

    return penalty


def summed_loss(step_losses: torch.Tensor, batch_sizes: list[int]) -> torch.Tensor:
    """Per-step batch-mean losses (..., S) times the batch sizes, summed over the steps: (...), float64."""
    sizes = torch.tensor(batch_sizes, dtype=torch.float64, device=step_losses.device)
    return (step_losses.double() * sizes).sum(-1)


class _Totals:
    """Running sums of one pass, kept on the device: the host synchronises once per pass."""

    def __init__(self, device: torch.device, task: str):
        self.task = task
        z = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.loss, self.hits, self.abs_err, self.count = z(), z(), z(), 0

    def add(self, loss: Optional[torch.Tensor], output: torch.Tensor, y: torch.Tensor, loss_name: str) -> None:
        """One batch: its mean loss (None: set later by losses_from_steps), outputs and targets."""
        n = len(y)
        if loss is not None:
            self.loss += loss.double() * n
        if self.task == "classification":
            self.hits += (losses.predicted_labels(output, loss_name) == y).sum()
        else:
            self.abs_err += (output.squeeze(1) - y).abs().double().sum()
        self.count += n

    def losses_from_steps(self, step_losses: torch.Tensor, batch_sizes: list[int]) -> None:
        """The pass's summed loss from its per-step batch means (one reduction per epoch)."""
        self.loss = summed_loss(step_losses, batch_sizes)

    def state(self) -> dict:
        return {"loss": self.loss.cpu(), "hits": self.hits.cpu(), "abs_err": self.abs_err.cpu(), "count": self.count}

    def restore(self, state: dict) -> None:
        self.loss.copy_(state["loss"]); self.hits.copy_(state["hits"]); self.abs_err.copy_(state["abs_err"])
        self.count = state["count"]

    def result(self, y_std: float = 1.0) -> dict:
        """loss; accuracy, or rmse and mae in the target's units (loss is on standardised targets)."""
        n = max(self.count, 1)
        loss = float(self.loss) / n
        if self.task == "classification":
            return {"loss": loss, "accuracy": float(self.hits) / n}
        return {"loss": loss, "rmse": math.sqrt(loss) * y_std if loss >= 0 else float("nan"),
                "mae": float(self.abs_err) / n * y_std}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, batches: Batches, loss_fn: losses.LossFn, task: str,
                   loss_name: str, y_std: float = 1.0) -> dict:
    """Mean loss and accuracy (or rmse, mae) of `model` over a split, in eval mode."""
    was_training = model.training
    model.eval()
    totals = _Totals(batches.device, task)
    for x, y in batches.epoch():
        output = model(x)
        totals.add(loss_fn(output, y), output, y, loss_name)
    model.train(was_training)
    return totals.result(y_std)


def autocast_for(cfg: Config, device: torch.device):
    """bf16 autocast where asked (or auto on CUDA); a no-op context otherwise."""
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available. Use train.device=auto or cpu.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _SigintFlag:
    """Ctrl-C sets a flag; the loop saves a resumable checkpoint after the current step and exits 130.

    A second Ctrl-C interrupts at once (the previous last.pt stays whole: writes are atomic).
    """

    def __init__(self) -> None:
        self.raised = False
        self.previous = None

    def __enter__(self) -> "_SigintFlag":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class _Progress:
    """A bar on a terminal, one plain line per epoch otherwise (no bar spam in CI logs)."""

    def __init__(self, mode: str, epochs: int, steps: int):
        self.mode = mode if mode != "auto" else ("bar" if sys.stderr.isatty() else "lines")
        self.epochs, self.steps, self.bar, self.task = epochs, steps, None, None
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("epoch {task.fields[epoch]}/" + str(epochs)), BarColumn(),
                                MofNCompleteColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                transient=False)
            self.bar.start()

    def start_epoch(self, epoch: int, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task("", total=self.steps, completed=done, epoch=epoch, info="")

    def step(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def end_epoch(self, row: dict) -> None:
        self.say(format_row(row, self.epochs))

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        elif self.mode == "lines":
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def format_row(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key, value in row.items():
        if key in ("epoch", "step"):
            continue
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}" if key != "seconds" else f"{value:.2f}s")
    return "  ".join(parts)


def prepare_config(config: Config | dict | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return build_config(config)
    return load_config(config)


def _apply_smoke(cfg: Config) -> Config:
    """--smoke: at most 2 epochs on 512 training examples, evaluation on 512: seconds, end to end."""
    raw = cfg.to_dict()
    raw["train"]["epochs"] = min(cfg.train.epochs, 2)
    raw["data"]["limit"] = min(cfg.data.limit or 512, 512)
    raw["eval"]["limit"] = min(cfg.eval.limit or 512, 512)
    return build_config(raw)


def train(config: Config | dict | str | Path, *, out: Optional[str | Path] = None,
          resume: Optional[str | Path] = None, smoke: bool = False, data_dir: Optional[str] = None,
          model: Optional[torch.nn.Module] = None, loss_fn: Optional[losses.LossFn] = None,
          step_fn: Optional[Callable] = None,
          on_epoch_end: Optional[Callable[[int, dict], Any]] = None,
          on_step_end: Optional[Callable[[int, int], Any]] = None,
          splits: Optional[data.Splits] = None) -> Result:
    """Train the model `config` describes; writes the run directory and returns a Result.

    >>> result = train("examples/seed_mlp.yaml")                  # or a Config, or a dict
    >>> result.metrics["test"]["accuracy"]
    Level (b): pass your own `model` (nn.Module), `loss_fn(output, y)` or `step_fn` with
    train_step's signature. Hooks: `on_epoch_end(epoch, row)` after each epoch's row is written,
    `on_step_end(epoch, step)` after each optimiser step (step counts from 1 within the epoch).
    `splits` trains on data already split (cross-validation folds) instead of loading `cfg.data`.
    """
    if resume is not None:
        run = RunDir(Path(resume))
        if not run.config.is_file():
            raise ConfigError(f"'{resume}' is not a run directory: it has no config.yaml. "
                              "Give the folder a previous `trainlab train` wrote.")
        cfg = load_config(run.config)
        state = checkpoint.load(run.last)
    else:
        cfg = prepare_config(config)
        if smoke:
            cfg = _apply_smoke(cfg)
        run = RunDir.create(out, cfg.name)
        save_config(cfg, run.config)
        state = None

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    dtype = getattr(torch, cfg.train.dtype)
    torch.manual_seed(cfg.train.seed)

    splits = splits if splits is not None else data.load(cfg, data_dir)
    loss_name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    n_out = losses.num_outputs(loss_name, splits.task, splits.num_classes)
    if model is None:
        from .models import build_model, check_output
        model = build_model(cfg.model, splits.input_shape, n_out)
        check_output(model, splits.input_shape, n_out)
    model = model.to(device=device, dtype=dtype)
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)  # the layout cuDNN's fast kernels want
    autocast = autocast_for(cfg, device)
    forward_model = torch.compile(model) if cfg.train.compile else model  # shares model's parameters
    loss_fn = loss_fn or losses.build_loss(cfg, splits.task, splits.num_classes)
    step_fn = step_fn or train_step
    penalty = make_penalty(cfg, model)
    y_std = splits.extra.get("target_std", 1.0)

    batch_size = len(splits.train) if cfg.optim.name == "gd" else cfg.train.batch_size
    train_batches = make_batches(splits, "train", batch_size, device, dtype, cfg, train=True)
    val_batches = make_batches(splits, "val", cfg.eval.batch_size, device, dtype, cfg)
    steps_per_epoch = len(train_batches)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    monitor_split, monitor_metric = cfg.train.monitor.split(".", 1)
    if monitor_split == "val" and val_batches is None:
        raise ConfigError(f"train.monitor={cfg.train.monitor} needs a validation split, but data.val_fraction=0. "
                          "Set data.val_fraction > 0 or train.monitor=train.loss.")

    # Progress: `epoch` is the epoch in progress (1-based), `step` the steps of it already done.
    progress_state = {"epoch": 1, "step": 0, "global_step": 0, "best_value": None, "best_epoch": None,
                      "bad_epochs": 0, "seconds": 0.0, "stopped_because": None}
    totals_state, gen_state, epoch_seconds_done = None, None, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        progress_state.update(state["progress"])
        totals_state, gen_state = state.get("totals"), state.get("aug_rng")
        epoch_seconds_done = state.get("epoch_seconds", 0.0)
    history = [r for r in run.read_metrics() if r["epoch"] < progress_state["epoch"]]
    if state is not None:
        run.write_metrics(history)  # drop rows of an epoch that was re-started (not possible normally)

    def snapshot(epoch: int, step: int, totals: Optional[_Totals], epoch_seconds: float) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": checkpoint.rng_state(),
            "aug_rng": train_batches.gen.get_state() if step else None,
            "totals": totals.state() if (totals is not None and step) else None,
            "epoch_seconds": epoch_seconds if step else 0.0,
            "progress": {**progress_state, "epoch": epoch, "step": step},
            "config": cfg.to_dict(), "code_version": code_version(),
        }

    from .loggers import make_logger
    logger = make_logger(cfg, run.path)  # before the loop: a missing package fails before training
    progress = _Progress(cfg.train.progress, cfg.train.epochs, steps_per_epoch)
    where = f"{device.type}, {torch.get_num_threads()} threads" if device.type == "cpu" else str(device)
    progress.say(f"{cfg.name}: {len(splits.train)} training examples, {steps_per_epoch} steps per epoch, "
                 f"device {where}, run {run.path}")
    run_start = time.perf_counter() - progress_state["seconds"]
    try:
        with _SigintFlag() as sigint:
            epoch = progress_state["epoch"]
            while epoch <= cfg.train.epochs:
                start_step = progress_state["step"]
                model.train()
                totals = _Totals(device, splits.task)
                if totals_state is not None:
                    totals.restore(totals_state)
                # Per-step losses stay on the device; one look per epoch finds the first NaN/inf.
                step_losses = torch.zeros(steps_per_epoch, device=device, dtype=dtype)
                if totals_state is not None and "step_losses" in totals_state:
                    step_losses.copy_(totals_state["step_losses"])
                progress.start_epoch(epoch, start_step)
                t0 = time.perf_counter() - epoch_seconds_done
                for step, batch in enumerate(train_batches.epoch(cfg.train.seed, epoch, start_step, gen_state),
                                             start=start_step + 1):
                    with autocast:
                        loss, output = step_fn(forward_model, batch, loss_fn, optimizer, penalty,
                                               cfg.train.clip_grad_norm)
                    # The batch's mean loss is kept once, per step: the epoch's loss is summed from
                    # step_losses at the end (one reduction instead of three small ops per step).
                    step_losses[step - 1] = loss
                    totals.add(None, output, batch[1], loss_name)
                    if scheduler is not None and not plateau:
                        scheduler.step()
                    progress_state["global_step"] += 1
                    progress.step()
                    if on_step_end is not None:
                        on_step_end(epoch, step)
                    every = cfg.train.checkpoint_every
                    if sigint.raised or (every and progress_state["global_step"] % every == 0
                                         and step < steps_per_epoch):
                        progress_state["seconds"] = time.perf_counter() - run_start
                        snap = snapshot(epoch, step, totals, time.perf_counter() - t0)
                        snap["totals"]["step_losses"] = step_losses.cpu()
                        checkpoint.save(run.last, snap)
                        if sigint.raised:
                            raise Interrupted(
                                f"Interrupted at epoch {epoch} step {step}; a resumable checkpoint is in "
                                f"{run.last}. Continue with: trainlab train --resume {run.path}")
                totals.losses_from_steps(step_losses, train_batches.batch_sizes())
                bad = ~torch.isfinite(step_losses)
                diverged = bool(bad.any())  # the one host synchronisation of the epoch
                epoch_seconds = time.perf_counter() - t0  # after the sync: queued GPU work included
                totals_state, gen_state, epoch_seconds_done = None, None, 0.0
                if diverged:
                    bad_step = int(bad.nonzero()[0, 0]) + 1
                    progress_state["stopped_because"] = "diverged"
                    _write_summary(run, cfg, history, progress_state, time.perf_counter() - run_start,
                                   {"train": {"loss": float("nan")}})
                    raise DivergedError(
                        f"Training diverged at epoch {epoch} step {bad_step}: the loss became "
                        f"{float(step_losses[bad_step - 1])}. The last good checkpoint is {run.last}"
                        f"{' (none yet)' if not run.last.exists() else ''}. Lower optim.lr "
                        f"(now {cfg.optim.lr}), add train.clip_grad_norm=1.0, or use a warm-up "
                        "(schedule.warmup_epochs=1).")
                row = {"epoch": epoch, "step": progress_state["global_step"],
                       "lr": optimizer.param_groups[0]["lr"], "seconds": epoch_seconds}
                row.update({f"train_{k}": v for k, v in totals.result(y_std).items()})
                if val_batches is not None:
                    with autocast:
                        val = evaluate_model(forward_model, val_batches, loss_fn, splits.task, loss_name, y_std)
                    row.update({f"val_{k}": v for k, v in val.items()})
                history.append(row)
                run.write_metrics(history)

                value = row.get(f"{monitor_split}_{monitor_metric}")
                if value is None:
                    raise ConfigError(f"train.monitor={cfg.train.monitor} is not a metric of this run; "
                                      f"it has {', '.join(k.replace('_', '.', 1) for k in row if '_' in k)}.")
                if is_better(value, progress_state["best_value"], cfg.train.monitor,
                             cfg.train.early_stopping.min_delta):
                    progress_state.update(best_value=value, best_epoch=epoch, bad_epochs=0)
                    checkpoint.save(run.best, {"model": model.state_dict(), "epoch": epoch,
                                               "monitor": cfg.train.monitor, "value": value,
                                               "config": cfg.to_dict(), "code_version": code_version()})
                else:
                    progress_state["bad_epochs"] += 1
                if plateau:
                    scheduler.step(value)
                patience = cfg.train.early_stopping.patience
                if patience is not None and progress_state["bad_epochs"] >= patience:
                    progress_state["stopped_because"] = "early_stopping"
                elif epoch == cfg.train.epochs:
                    progress_state["stopped_because"] = "epochs"
                progress_state["seconds"] = time.perf_counter() - run_start
                checkpoint.save(run.last, snapshot(epoch + 1, 0, None, 0.0))
                progress.end_epoch(row)
                if logger is not None:
                    logger(epoch, row)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
                if progress_state["stopped_because"] == "early_stopping":
                    break
                epoch += 1
                progress_state.update(epoch=epoch, step=0)
    finally:
        progress.close()
        if logger is not None:
            logger.close()

    # Final evaluation on every split with the checkpoint train.final names (best by default).
    if cfg.train.final == "best" and run.best.exists():
        checkpoint.load_weights(model, run.best)
    final = {}
    train_batches = None  # frees the training split's device copy before the evaluation passes
    for name in ("train", "val", "test"):
        batches = val_batches if name == "val" else make_batches(splits, name, cfg.eval.batch_size, device,
                                                                  dtype, cfg)
        if batches is not None:
            with autocast:
                final[name] = evaluate_model(forward_model, batches, loss_fn, splits.task, loss_name, y_std)
    summary = _write_summary(run, cfg, history, progress_state, time.perf_counter() - run_start, final)
    return Result(run_dir=run.path, summary=summary, history=history, model=model)


def _write_summary(run: RunDir, cfg: Config, history: list[dict], progress_state: dict, seconds: float,
                   metrics: dict) -> dict:
    summary = {
        "run_dir": str(run.path),
        "epochs_run": len(history),
        "best_epoch": progress_state["best_epoch"],
        "stopped_because": progress_state["stopped_because"],
        "seconds": seconds,
        "final_checkpoint": cfg.train.final if progress_state["best_epoch"] is not None else "last",
        "monitor": cfg.train.monitor,
        "metrics": metrics,
        "code_version": code_version(),
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(run.summary, summary)
    return summary
