"""Finishing a pack: each member's final weights, one packed evaluation of every split, its run files and Result."""

from __future__ import annotations

import torch

from .. import checkpoint
from ..data.loader import make_batches
from ..runs import atomic_write_json, code_version
from ..train import Result
from .model import Member, PackedMLP
from .passes import Shared, evaluate_pack

SPLITS = ("train", "val", "test")  # summary.json's order


def finish_runs(members: list[Member], shared: Shared, seconds: float) -> list[Result]:
    """Final weights (train.final), one packed evaluation of every split, run files, Results."""
    for m in members:
        _final_weights(m)
    finals = _final_metrics(members, shared)
    return [_finish_run(m, finals[m.index], len(members), seconds) for m in members]


def _final_weights(m: Member) -> None:
    """Load the member's final weights into its module and save its checkpoints (best.pt; last.pt when
    those are final or it has no best)."""
    final = m.best_state if (m.cfg.train.final == "best" and m.best_state is not None) else m.state_dict()
    m.module.load_state_dict(final)
    if m.best_state is not None:
        checkpoint.save(m.run.best, {"model": m.best_state, "epoch": m.best_epoch, "monitor": m.cfg.train.monitor,
                                     "value": m.best_value, "config": m.cfg.to_dict(),
                                     "code_version": code_version()})
    if m.best_state is None or m.cfg.train.final == "last":
        checkpoint.save(m.run.last, {"model": m.state_dict(), "epoch": len(m.history), "resumable": False,
                                     "config": m.cfg.to_dict(), "code_version": code_version()})


def _final_metrics(members: list[Member], shared: Shared) -> dict[int, dict]:
    """{member index: {split: metrics}} of the final weights; empty for a member that diverged."""
    healthy = [m for m in members if m.stopped_because != "diverged"]
    finals: dict[int, dict] = {m.index: {} for m in members}
    for m in healthy:  # val: the row of the epoch whose weights are final (train() would recompute it)
        epoch = m.best_epoch if (m.cfg.train.final == "best" and m.best_state is not None) else len(m.history)
        row = m.history[epoch - 1] if epoch else {}
        val = {key[4:]: v for key, v in row.items() if key.startswith("val_")}
        if val:
            finals[m.index]["val"] = val
    if healthy:
        first = healthy[0].cfg
        pack = PackedMLP([m.module for m in healthy], first.model.activation, [0.0] * len(healthy),
                         [None] * len(healthy))
        for name in SPLITS:
            if name == "val" and all("val" in finals[m.index] for m in healthy):
                continue
            if name == "train":  # the training split already on the device, read in order, unaugmented
                batches = shared.train_batches.for_eval(first.eval.batch_size, first.eval.limit)
            else:
                batches = make_batches(shared.splits, name, first.eval.batch_size, shared.device, shared.dtype, first)
            if batches is None:
                continue
            totals = evaluate_pack(pack, batches, healthy, shared)
            for j, m in enumerate(healthy):
                finals[m.index][name] = totals.result(j, shared.y_std)
    for m in healthy:
        finals[m.index] = {name: finals[m.index][name] for name in SPLITS if name in finals[m.index]}
    return finals


def _finish_run(m: Member, metrics: dict, pack_members: int, seconds: float) -> Result:
    """The member's summary.json, written atomically, and its Result."""
    if m.stopped_because == "diverged":
        metrics = {"train": {"loss": float("nan")}}
    summary = {
        "run_dir": str(m.run.path),
        "epochs_run": len(m.history),
        "best_epoch": m.best_epoch,
        "stopped_because": m.stopped_because,
        "seconds": m.seconds,
        "final_checkpoint": m.cfg.train.final if m.best_epoch is not None else "last",
        "monitor": m.cfg.train.monitor,
        "metrics": metrics,
        "code_version": code_version(),
        "torch_threads": torch.get_num_threads(),
        "packed": {"members": pack_members, "seconds": seconds},
    }
    if m.diverged_at is not None:
        epoch, step, value = m.diverged_at
        summary["diverged"] = {"epoch": epoch, "step": step, "loss": value}
    atomic_write_json(m.run.summary, summary)
    return Result(run_dir=m.run.path, summary=summary, history=m.history, model=m.module)
