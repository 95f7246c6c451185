"""train(config) -> Result: the training loop, one plain function; train_step() calls backward()."""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import checkpoint, data, distributed, losses, memory
from .config import Config
from .data.loader import Batches, make_batches
from .device import autocast_for, place_model, resolve_device
from .distributed import World
from .errors import ConfigError, DivergedError, Interrupted, Terminated
from .opening import apply_smoke, check_command, open_run, prepare_config  # noqa: F401 (re-exported)
from .optim import build_optimizer, build_scheduler, is_better, parameter_groups, step_optimizer
from .passes import Totals, evaluate_model, summed_loss
from .progress import Progress, format_row
from .runs import RunDir, atomic_write_json, atomic_write_text, code_version
from .signals import StopFlag

# Names other modules import from here (packed training, search, lr-find, check).
__all__ = ["Result", "train", "train_step", "make_penalty", "prepare_config", "check_monitor", "evaluate_model", "summed_loss",
           "autocast_for", "resolve_device", "format_row", "apply_smoke"]


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
               clip_grad_norm: Optional[float] = None, accumulate: int = 1,
               scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch; returns (loss, output), both detached.

    The only place in trainlab that calls backward(). A custom step passed to train() has this
    signature (train() passes `accumulate` only when train.accumulate > 1, `scale` only on several
    processes). The returned loss is the batch's mean and excludes the L1/L2 penalty, so curves
    compare across penalties. accumulate=k: the batch is k micro-batches, each weighted by its share
    of the examples (or tokens), backward once each. scale: the factor on this rank's mean loss
    that makes DistributedDataParallel's average of the ranks' gradients the gradient of the global
    batch's mean (world size x this rank's share of the global batch).
    """
    x, y = batch
    parts = [(x, y)] if accumulate == 1 else list(zip(x.tensor_split(accumulate), y.tensor_split(accumulate)))
    step_losses, outputs = [], []
    for i, (xs, ys) in enumerate(parts):
        # Under DDP every backward all-reduces; the micro-batches before the last only accumulate.
        last = i == len(parts) - 1
        with nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            output = model(xs)               # (B, K) logits, (B, 1), or (B, T, V) for a language model
            if ys.numel() == 0:              # an empty slice (fewer rows than ranks x micro-batches):
                loss = output.sum() * 0.0    # no loss, but the backward every rank's DDP waits for
            else:
                loss = loss_fn(output, ys)   # mean over the (micro-)batch
                if accumulate > 1:           # its share of the whole batch's mean
                    loss = loss * (ys.numel() / y.numel())
            objective = loss if scale == 1.0 else loss * scale
            if penalty is not None:
                objective = objective + (penalty() if accumulate == 1 else penalty() / accumulate)
            objective.backward()
        step_losses.append(loss.detach())
        outputs.append(output.detach())
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    step_optimizer(optimizer)                # optimizer.step(); gradients set to None
    if accumulate == 1:
        return step_losses[0], outputs[0]
    return torch.stack(step_losses).sum(), torch.cat(outputs)


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
    world = distributed.start()  # under torchrun: this rank among WORLD_SIZE processes; else World()
    cfg, run, saved = open_run(config, out, resume, smoke, world)
    if saved is not None:
        check_command(run, saved, pretraining=splits is not None and splits.task == "self_supervised")
    s = build_setup(cfg, run, data_dir, splits, model, loss_fn, step_fn, world)
    state, partial = restore(s, saved)  # where to start, and the interrupted epoch's running sums
    history = world.on_writer(lambda: [r for r in run.read_metrics() if r["epoch"] < state.epoch])
    if saved is not None and world.is_writer:
        run.write_metrics(history)  # drop rows of an epoch that was re-started (not possible normally)
    from .loggers import make_logger
    logger = make_logger(cfg, run.path) if world.is_writer else None  # a missing package fails before training
    console = Progress(cfg.train.progress if world.is_writer else "none", s.rounds, len(s.train_batches),
                       cfg.train.steps)
    console.say(describe(s))
    run_start = time.perf_counter() - state.seconds
    try:
        with StopFlag() as stop:
            while state.epoch <= s.rounds and state.stopped_because != "early_stopping":
                totals, seconds, first_bad = train_epoch(s, state, partial, stop, console, on_step_end, run_start)
                partial = None
                if first_bad is not None:
                    raise diverged(s, state, history, first_bad, time.perf_counter() - run_start)
                row = epoch_row(s, state, totals, seconds)
                history.append(row)
                judge_epoch(s, state, row)  # best.pt, early stopping, reduce_on_plateau
                state.epoch, state.step = state.epoch + 1, 0
                state.seconds = time.perf_counter() - run_start
                shot = snapshot(s, state)  # on every rank: a sharded model's weights are gathered
                if world.is_writer:
                    run.write_metrics(history)
                    checkpoint.save(run.last, shot)
                    save_native(s, run.last)
                console.end_epoch(row)
                if logger is not None:
                    logger(row["epoch"], row)
                if on_epoch_end is not None:
                    on_epoch_end(row["epoch"], row)
    finally:
        console.close()
        if logger is not None:
            logger.close()
    final = final_metrics(s)
    summary = write_summary(run, cfg, history, state, time.perf_counter() - run_start, final, world)
    s.step_model = None  # DistributedDataParallel's hold on the process group, released before stop()
    distributed.stop(world)
    return Result(run_dir=run.path, summary=summary, history=history, model=s.model)


@dataclass
class RunState:
    """Where the run stands, saved in every last.pt as "progress" (so resume continues from it)."""

    epoch: int = 1                 # the epoch in progress, 1-based (with train.steps: the evaluation period)
    step: int = 0                  # steps of that epoch already done
    global_step: int = 0           # optimiser steps since the run began
    best_value: Optional[float] = None   # best train.monitor value so far, and its epoch
    best_epoch: Optional[int] = None
    bad_epochs: int = 0            # epochs since train.monitor last improved (early stopping)
    seconds: float = 0.0           # wall time of the run so far, resumed runs included
    stopped_because: Optional[str] = None  # epochs | steps | early_stopping | diverged


@dataclass
class Setup:
    """Everything one run trains with, built once from the config by build_setup (fields only)."""

    cfg: Config
    run: Optional[RunDir]           # None for trainlab check, which writes nothing
    device: torch.device
    dtype: torch.dtype
    splits: data.Splits
    model: torch.nn.Module          # the module whose weights are saved
    forward_model: Callable         # what evaluates: the model, or torch.compile of it (shared parameters)
    step_model: Callable            # what trains: forward_model, inside DistributedDataParallel on several processes
    loss_fn: losses.LossFn
    loss_name: str
    step_fn: Callable
    penalty: Optional[Callable[[], torch.Tensor]]
    autocast: Any                   # a reusable autocast context (a no-op unless bf16)
    train_batches: Optional[Batches]
    val_batches: Optional[Batches]
    optimizer: torch.optim.Optimizer
    scheduler: Any                  # an lr_scheduler, or None for a constant lr
    plateau: bool                   # reduce_on_plateau: stepped per epoch with the monitored value
    y_std: float                    # regression: the target's std (metrics in the target's units)
    rounds: int                     # metrics rows to train for: train.epochs, or train.steps / eval.every
    step_kwargs: dict               # extra arguments of step_fn: {"accumulate": k} when train.accumulate > 1
    world: World = World()          # this process among torchrun's; World() on one process


def build_setup(cfg: Config, run: Optional[RunDir], data_dir: Optional[str], splits: Optional[data.Splits],
                model: Optional[torch.nn.Module], loss_fn: Optional[losses.LossFn],
                step_fn: Optional[Callable], world: World = World()) -> Setup:
    """Data, model, loss, batches, optimiser and schedule from the config (the seed fixes the init).

    `run` None (trainlab check): nothing is written; a language model's tokenizer is fitted anew.
    On several processes every rank builds the same model and batches (the same seeded order) and
    trains on its slice of each batch; a language model uses rank 0's tokenizer.
    """
    keras = cfg.train.backend == "keras"
    if keras:  # keys Keras cannot do are refused before any data is loaded
        from . import keras_backend
        keras_backend.check(cfg, world.distributed, custom=any(a is not None for a in (model, loss_fn, step_fn)))
        keras_backend.set_threads(cfg.train.threads)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    # The keras backend feeds TensorFlow's CPU build from host tensors (train.device=cuda is refused).
    device = torch.device("cpu") if keras else world.device(resolve_device(cfg.train.device))
    dtype = getattr(torch, cfg.train.dtype)
    torch.manual_seed(cfg.train.seed)
    if splits is None:
        saved_tokenizer = world.on_writer(lambda: _saved_tokenizer(run))  # tokenizer.json's text, or None
        splits = data.load(cfg, data_dir, tokenizer=_tokenizer_from(saved_tokenizer))
        if world.distributed and splits.task == "language_model" and saved_tokenizer is None:
            ours = splits.extra["tokenizer"].to_json()
            chosen = world.share(ours)
            if chosen != ours:  # a fit that came out differently on this rank: take rank 0's
                splits = data.load(cfg, data_dir, tokenizer=_tokenizer_from(chosen))
    check_monitor(cfg, splits)
    if splits.task == "language_model" and run is not None and world.is_writer and not run.tokenizer.exists():
        atomic_write_text(run.tokenizer, splits.extra["tokenizer"].to_json())
    loss_name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    n_out = losses.num_outputs(loss_name, splits.task, splits.num_classes)
    if model is None:
        from .models import build_model, check_output
        memory.check(cfg, splits, n_out, device, world)  # too large for the device: ConfigError before allocating
        model = build_model(cfg.model, splits.input_shape, n_out)
        if splits.task != "language_model":  # token ids in, (B, T, V) out: GPT checks its own sizes
            check_output(model, splits.input_shape, n_out)
        if cfg.model.init_from:  # a `trainlab pretrain` run's encoder; resume then loads last.pt over it
            from .pretrain import load_encoder
            load_encoder(model, cfg.model.init_from, freeze=cfg.model.freeze)
    model = place_model(model, device, dtype)
    if keras:  # the same network in Keras, from the weights torch drew at this seed
        model = keras_backend.build_network(cfg, model, splits.input_shape, loss_name, splits.task)
    sharded = world.distributed and cfg.train.strategy == "fsdp"
    if sharded:
        if cfg.model.name != "gpt":
            raise ConfigError(f"train.strategy=fsdp shards a gpt's transformer blocks; model.name={cfg.model.name} "
                              "fits one device: use train.strategy=ddp.")
        distributed.shard(model)  # before the optimiser: it must see the sharded parameters
    # Each optimiser step takes train.accumulate batches at once; train_step splits them again.
    batch_size = len(splits.train) if cfg.optim.name == "gd" else cfg.train.batch_size * cfg.train.accumulate
    train_batches = make_batches(splits, "train", batch_size, device, dtype, cfg, train=True)
    val_batches = make_batches(splits, "val", cfg.eval.batch_size, device, dtype, cfg)
    if keras:
        optimizer, step_fn = keras_backend.build_optimizer(cfg, model), keras_backend.train_step
    else:
        optimizer = build_optimizer(cfg, parameter_groups(cfg, model))
    scheduler = build_scheduler(cfg, optimizer, len(train_batches))
    forward_model = torch.compile(model) if cfg.train.compile else model
    step_model = forward_model
    if world.distributed and not sharded:  # DDP averages the ranks' gradients during backward
        step_model = distributed.wrap(model, world, device)
        step_model = torch.compile(step_model) if cfg.train.compile else step_model
    return Setup(cfg=cfg, run=run, device=device, dtype=dtype, splits=splits, model=model,
                 forward_model=forward_model, step_model=step_model, world=world,
                 loss_fn=loss_fn or losses.build_loss(cfg, splits.task, splits.num_classes), loss_name=loss_name,
                 step_fn=step_fn or train_step,
                 penalty=None if keras else make_penalty(cfg, model),  # keras: the layers' regularizers
                 autocast=autocast_for(cfg, device),
                 train_batches=train_batches, val_batches=val_batches, optimizer=optimizer, scheduler=scheduler,
                 plateau=isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
                 y_std=splits.extra.get("target_std", 1.0),
                 rounds=cfg.train.steps // (cfg.eval.every or cfg.train.steps) if cfg.train.steps else cfg.train.epochs,
                 step_kwargs={"accumulate": cfg.train.accumulate} if cfg.train.accumulate > 1 else {})


def _saved_tokenizer(run: Optional[RunDir]) -> Optional[str]:
    """A language-model run's tokenizer.json text when it has one (resume): never fitted twice."""
    if run is None or not run.tokenizer.exists():
        return None
    return run.tokenizer.read_text()


def _tokenizer_from(text: Optional[str]):
    if text is None:
        return None
    from .data.text import Tokenizer
    return Tokenizer.from_json(text)


def check_monitor(cfg: Config, splits: data.Splits) -> None:
    """train.monitor must name a metric every epoch's row has: fail before training, not after an epoch."""
    split, metric = cfg.train.monitor.split(".", 1)
    if split == "val" and splits.val is None:
        raise ConfigError(f"train.monitor={cfg.train.monitor} needs a validation split, but data.val_fraction=0. "
                          "Set data.val_fraction > 0 or train.monitor=train.loss.")
    metrics = {"classification": ("loss", "accuracy"), "regression": ("loss", "rmse", "mae"),
               "language_model": ("loss", "accuracy", "perplexity", f"bits_per_{splits.extra.get('unit')}"),
               "self_supervised": ("loss", "probe_accuracy")}[splits.task]
    if metric not in metrics:
        raise ConfigError(f"train.monitor={cfg.train.monitor} is not a metric of this run; it has "
                          f"{', '.join(f'{split}.{m}' for m in metrics)}.")


def restore(s: Setup, saved: Optional[dict]) -> tuple[RunState, Optional[dict]]:
    """Put a last.pt back: weights, optimiser, schedule, RNG; returns the position and, when it was
    saved mid-epoch, that epoch's running totals, augmentation RNG and seconds so far (else None)."""
    if saved is None:
        _seed_other_ranks(s, 0)
        return RunState(), None
    distributed.load_full_state(s.model, s.optimizer, saved["model"], saved["optimizer"])
    if s.scheduler is not None and saved.get("scheduler") is not None:
        s.scheduler.load_state_dict(saved["scheduler"])
    checkpoint.set_rng_state(saved["rng"])
    partial = None
    if saved.get("totals") is not None:
        partial = {"totals": saved["totals"], "aug_rng": saved.get("aug_rng"),
                   "epoch_seconds": saved.get("epoch_seconds", 0.0)}
    state = RunState(**saved["progress"])
    _seed_other_ranks(s, state.global_step)
    return state, partial


def _seed_other_ranks(s: Setup, global_step: int) -> None:
    """Ranks above 0 draw dropout from their own stream (rank 0 keeps the seed's, or last.pt's):
    otherwise every rank's slice would get the same masks."""
    if s.world.rank > 0:
        from .data.loader import epoch_seed
        torch.manual_seed(epoch_seed(s.cfg.train.seed, global_step, 2 + s.world.rank))


def describe(s: Setup) -> str:
    """The line a run starts with: what it trains on, how many steps, where."""
    where = f"cpu, {torch.get_num_threads()} threads" if s.device.type == "cpu" else str(s.device)
    if s.cfg.train.backend == "keras":
        from .keras_backend import versions
        where = f"cpu, {versions()}"
    if s.world.distributed:
        where += f", {s.world.size} processes"
    if s.splits.task == "language_model":
        from .models import count_parameters
        return (f"{s.cfg.name}: {len(s.splits.train)} training tokens, vocabulary {s.splits.num_classes}, "
                f"{count_parameters(s.model):,} parameters, {s.rounds} x {len(s.train_batches)} steps, "
                f"device {where}, run {s.run.path}")
    if s.cfg.train.steps:
        steps = f"{s.rounds} x {len(s.train_batches)} steps ({s.train_batches.per_pass} per pass over the data)"
    else:
        steps = f"{len(s.train_batches)} steps per epoch"
    return f"{s.cfg.name}: {len(s.splits.train)} training examples, {steps}, device {where}, run {s.run.path}"


def train_epoch(s: Setup, state: RunState, partial: Optional[dict], stop: StopFlag, console: Progress,
                on_step_end: Optional[Callable[[int, int], Any]], run_start: float
                ) -> tuple[Totals, float, Optional[tuple[int, float]]]:
    """One pass over the training batches, from state.step on (mid-epoch after a resume).

    Returns the epoch's running totals (summed over the ranks), its wall time in seconds, and the
    first step whose loss was not finite with that loss (or None). Saves last.pt every
    train.checkpoint_every steps and on Ctrl-C or SIGTERM (then raises Interrupted or Terminated).
    Each rank takes its slice of every global batch; its per-step loss is its share of the global
    batch's mean (mean x its fraction of the targets), so the ranks' shares sum to that mean.
    """
    cfg, epoch, steps, world = s.cfg, state.epoch, len(s.train_batches), s.world
    s.model.train()
    totals = Totals(s.device, s.splits.task)
    # Per-step losses (steps,) stay on the device; one look per epoch finds the first NaN/inf.
    step_losses = torch.zeros(steps, device=s.device, dtype=s.dtype)
    if partial is not None and world.is_writer:  # last.pt holds the sums over all ranks: counted once
        totals.restore(partial["totals"])
        if "step_losses" in partial["totals"]:
            step_losses.copy_(partial["totals"]["step_losses"])
    console.start_epoch(epoch, state.step)
    t0 = time.perf_counter() - (partial["epoch_seconds"] if partial is not None else 0.0)
    batches = s.train_batches.epoch(cfg.train.seed, epoch, state.step, partial and partial["aug_rng"])
    for step, (x, y) in enumerate(batches, start=state.step + 1):
        share, kwargs = 1.0, s.step_kwargs
        if world.distributed:
            n_global = y.numel()
            x, y = world.local(x), world.local(y)
            share = y.numel() / n_global
            kwargs = {**s.step_kwargs, "scale": world.size * share}
        with s.autocast:
            loss, output = s.step_fn(s.step_model, (x, y), s.loss_fn, s.optimizer, s.penalty,
                                     cfg.train.clip_grad_norm, **kwargs)
        # The batch's mean loss is kept once, per step: the epoch's loss is summed from step_losses
        # at the end (one reduction instead of three small ops per step).
        step_losses[step - 1] = loss if share == 1.0 else loss * share
        totals.add(None, output, y, s.loss_name)
        if s.scheduler is not None and not s.plateau:
            s.scheduler.step()
        state.global_step += 1
        console.step()
        if on_step_end is not None:
            on_step_end(epoch, step)
        every = cfg.train.checkpoint_every
        signum = world.max(stop.signum or 0, s.device)  # one rank's SIGTERM stops every rank at this step
        if signum or (every and state.global_step % every == 0 and step < steps):
            state.step, state.seconds = step, time.perf_counter() - run_start
            totals_state = {**totals.state_over(world), "step_losses": world.sum_(step_losses.clone()).cpu()}
            shot = snapshot(s, state, totals_state, time.perf_counter() - t0)  # every rank: see train()
            if world.is_writer:
                checkpoint.save(s.run.last, shot)
            if signum:
                kind = Terminated if signum == signal.SIGTERM else Interrupted
                what = "Stopped by SIGTERM" if kind is Terminated else "Interrupted"
                raise kind(f"{what} at epoch {epoch} step {step}; a resumable checkpoint is in "
                           f"{s.run.last}. Continue with: trainlab train --resume {s.run.path}")
    world.sum_(step_losses)  # every rank's shares: the global batches' mean losses
    totals.sum_over(world)
    totals.losses_from_steps(step_losses, s.train_batches.batch_sizes())
    bad = ~torch.isfinite(step_losses)
    first_bad = None
    if bool(bad.any()):  # the one host synchronisation of the epoch
        index = int(bad.nonzero()[0, 0])
        first_bad = (index + 1, float(step_losses[index]))
    return totals, time.perf_counter() - t0, first_bad  # seconds after the sync: queued GPU work included


def snapshot(s: Setup, state: RunState, totals: Optional[dict] = None, epoch_seconds: float = 0.0) -> dict:
    """last.pt's content at `state`: mid-epoch (state.step > 0) it also holds the epoch's running
    totals, the augmentation generator and the seconds so far, so resume is exact."""
    mid = state.step > 0
    model_state, optimizer_state = distributed.full_state(s.model, s.optimizer)
    return {
        "model": model_state, "optimizer": optimizer_state,
        "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
        "rng": checkpoint.rng_state(),
        "aug_rng": s.train_batches.gen.get_state() if mid else None,
        "totals": totals if mid else None,
        "epoch_seconds": epoch_seconds if mid else 0.0,
        "progress": asdict(state),
        "config": s.cfg.to_dict(), "code_version": code_version(),
    }


def save_native(s: Setup, checkpoint_path: Path) -> None:
    """A keras run also keeps each checkpoint's weights in Keras' own format (best.keras beside best.pt)."""
    if s.cfg.train.backend == "keras":
        s.model.save_native(checkpoint_path.with_suffix(".keras"))


def diverged(s: Setup, state: RunState, history: list[dict], first_bad: tuple[int, float],
             seconds: float) -> DivergedError:
    """Record the divergence in summary.json; the error names the step and what to try."""
    step, loss = first_bad
    state.stopped_because = "diverged"
    write_summary(s.run, s.cfg, history, state, seconds, {"train": {"loss": float("nan")}}, s.world)
    return DivergedError(
        f"Training diverged at epoch {state.epoch} step {step}: the loss became {loss}. The last good "
        f"checkpoint is {s.run.last}{' (none yet)' if not s.run.last.exists() else ''}. Lower optim.lr "
        f"(now {s.cfg.optim.lr}), add train.clip_grad_norm=1.0, or use a warm-up (schedule.warmup_epochs=1).")


def epoch_row(s: Setup, state: RunState, totals: Totals, seconds: float) -> dict:
    """The epoch's metrics.jsonl row: running training totals, then a validation pass in eval mode."""
    row = {"epoch": state.epoch, "step": state.global_step, "lr": s.optimizer.param_groups[0]["lr"],
           "seconds": seconds}
    if s.splits.task == "language_model" or s.cfg.train.steps:  # how far into the data the run is
        unit = "tokens" if s.splits.task == "language_model" else "examples"
        seen = sum(s.train_batches.batch_sizes())  # tokens predicted (or examples trained on) this period
        row.update({unit: state.global_step * seen // len(s.train_batches), f"{unit}_per_second": seen / seconds})
    row.update({f"train_{k}": v for k, v in scores(s, totals.result(s.y_std)).items()})
    if s.val_batches is not None:
        row.update({f"val_{k}": v for k, v in evaluate(s, s.val_batches).items()})
    return s.world.share(row)  # rank 0's row: every decision taken from it is taken once, alike


def evaluate(s: Setup, batches: Batches) -> dict:
    """A pass over `batches` in eval mode with the run's model, loss and precision."""
    with s.autocast:
        metrics = scores(s, evaluate_model(s.forward_model, batches, s.loss_fn, s.splits.task, s.loss_name,
                                           s.y_std, s.world))
    if s.splits.task == "self_supervised":  # trainlab pretrain: how well a linear layer reads the encoder
        from .pretrain import probe_accuracy
        metrics["probe_accuracy"] = probe_accuracy(s, batches)
    return metrics


def scores(s: Setup, metrics: dict) -> dict:
    """A pass's metrics; for a language model with perplexity and bits per character (or byte)."""
    if s.splits.task != "language_model":
        return metrics
    from .data.text import language_metrics
    return {**metrics, **language_metrics(metrics["loss"], s.splits.extra)}


def judge_epoch(s: Setup, state: RunState, row: dict) -> None:
    """train.monitor's value of the epoch: best.pt when it improves, early stopping, reduce_on_plateau."""
    cfg = s.cfg
    value = row[cfg.train.monitor.replace(".", "_", 1)]  # a metric of the row: check_monitor made sure
    if is_better(value, state.best_value, cfg.train.monitor, cfg.train.early_stopping.min_delta):
        state.best_value, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        weights = distributed.full_model_state(s.model)  # every rank: gathered when sharded
        if s.world.is_writer:
            checkpoint.save(s.run.best, {"model": weights, "epoch": state.epoch,
                                         "monitor": cfg.train.monitor, "value": value,
                                         "config": cfg.to_dict(), "code_version": code_version()})
            save_native(s, s.run.best)
    else:
        state.bad_epochs += 1
    if s.plateau:
        s.scheduler.step(value)
    patience = cfg.train.early_stopping.patience
    if patience is not None and state.bad_epochs >= patience:
        state.stopped_because = "early_stopping"
    elif state.epoch == s.rounds:
        state.stopped_because = "steps" if cfg.train.steps else "epochs"


def final_metrics(s: Setup) -> dict:
    """Every split scored with the checkpoint train.final names (best by default), in eval mode."""
    if s.cfg.train.final == "best" and s.world.on_writer(s.run.best.exists):
        if s.world.distributed:  # rank 0 reads (other machines may not see its disk); every rank loads
            best = s.world.on_writer(lambda: checkpoint.load(s.run.best)["model"])
            distributed.load_full_state(s.model, None, best)  # its shards, when sharded
        else:
            checkpoint.load_weights(s.model, s.run.best)
    s.train_batches = None  # frees the training split's device copy before the evaluation passes
    final = {}
    for name in ("train", "val", "test"):
        batches = s.val_batches if name == "val" else make_batches(s.splits, name, s.cfg.eval.batch_size,
                                                                    s.device, s.dtype, s.cfg)
        if batches is not None:
            final[name] = evaluate(s, batches)
    return final


def write_summary(run: RunDir, cfg: Config, history: list[dict], state: RunState, seconds: float,
                  metrics: dict, world: World = World()) -> dict:
    """summary.json's object, written by rank 0."""
    summary = {
        "run_dir": str(run.path),
        "epochs_run": len(history),
        "best_epoch": state.best_epoch,
        "stopped_because": state.stopped_because,
        "seconds": seconds,
        "final_checkpoint": cfg.train.final if state.best_epoch is not None else "last",
        "monitor": cfg.train.monitor,
        "metrics": metrics,
        "code_version": code_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if world.distributed:
        summary["world_size"] = world.size  # processes that trained together (torchrun)
    if world.is_writer:
        atomic_write_json(run.summary, summary)
    return summary


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
