"""Which configs can share a pack: the per-member keys, packable and pack_key."""

from __future__ import annotations

import json
from typing import Optional

from ..config import Config

# Config keys each member of a pack may set to its own value. Every other key must be equal
# across a pack (pack_key); the search uses this list to decide what can be packed.
PER_MEMBER_KEYS = (
    "name", "optim", "schedule", "regularize.l1", "regularize.l2", "model.dropout", "train.seed",
    "train.epochs", "train.monitor", "train.final", "train.early_stopping", "train.clip_grad_norm",
    "train.checkpoint_every", "train.progress", "train.logger", "train.threads", "loss.label_smoothing",
)


def packable(cfg: Config) -> bool:
    """Whether `cfg` can be trained in a pack: a plain torch MLP (no batch norm), not compiled, by epochs
    (the packed loop counts epochs; a train.steps budget trains one trial at a time)."""
    return (cfg.model.name == "mlp" and not cfg.model.batch_norm and not cfg.train.compile
            and cfg.train.backend == "torch" and cfg.train.steps is None)


def pack_key(cfg: Config) -> Optional[str]:
    """Configs with equal keys can train in one pack; None when `cfg` cannot be packed at all.

    The key is everything a pack shares: the data, the MLP's shape and activation, the loss, the
    (effective) batch size, device, dtype and precision, evaluation and augmentation.
    """
    if not packable(cfg):
        return None
    shared = cfg.to_dict()
    for dotted in PER_MEMBER_KEYS:
        *parents, last = dotted.split(".")
        node = shared
        for p in parents:
            node = node[p]
        node.pop(last, None)
    shared["batch"] = "full" if cfg.optim.name == "gd" else cfg.train.batch_size
    shared["train"].pop("batch_size", None)
    return json.dumps(shared, sort_keys=True)
