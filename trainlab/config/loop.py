"""The regularisation, training-loop and evaluation sections: penalties, epochs or steps, devices, what is monitored."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from .data import AugmentConfig
from .section import Section


class RegularizeConfig(Section):
    """Both penalties cover weight matrices and conv kernels only (parameters with 2 or more
    dimensions), not biases or normalisation parameters, and are left out of the reported loss, so
    curves compare across penalties. `regularize.l2` is L2 regularisation in the loss, for any
    optimiser; `optim.weight_decay` is decay inside the optimiser and covers all parameters, biases
    included. For SGD (and Adam, whose weight_decay is coupled) the two give the same update on the
    weights; for AdamW the decay is decoupled from the adaptive step, which is not the same as L2."""

    l1: float = Field(0.0, ge=0.0, description="adds `l1 × Σ|w|` over weight matrices and kernels to the loss")
    l2: float = Field(0.0, ge=0.0, description=
        "adds `l2/2 × Σw²` over weight matrices and kernels to the loss (gradient `l2 × w`)")
    augment: AugmentConfig = Field(AugmentConfig(), description="data augmentation of training images")


class EarlyStoppingConfig(Section):
    """A run stopped early has `stopped_because: early_stopping` in summary.json."""

    patience: Optional[int] = Field(None, ge=1, description=
        "stop after this many epochs in a row without improvement of `train.monitor`; null = off")
    min_delta: float = Field(0.0, ge=0.0, description=
        "the smallest change of `train.monitor` that counts as an improvement (also for `best.pt`)")


class TrainConfig(Section):
    """The training loop: epochs, batches, seed, device and precision, what is monitored and saved."""

    epochs: int = Field(10, ge=1, description="passes over the training split")
    steps: Optional[int] = Field(None, ge=1, description=
        "a budget of optimiser steps instead of `train.epochs`: one metrics row (an evaluation period) every "
        "`eval.every` steps. Image and table runs take full batches from one pass over the data after "
        "another (each pass's last partial batch is left out); schedule and early-stopping keys counted in "
        "epochs count periods. null = train by epochs")
    batch_size: int = Field(64, ge=1, description=
        "examples per optimiser step (ignored by `optim.name=gd`); the last batch may be smaller")
    seed: int = Field(0, ge=0, description="seed of initialisation, dropout, the per-epoch shuffling and augmentation")
    backend: Literal["torch", "keras"] = Field("torch", description=
        "the framework that computes each step: `torch`, or `keras` (Keras 3 on TensorFlow, `pip install "
        "'trainlab[keras]'`; model.name mlp, cnn or resnet): the same network from the same initial weights, batches, "
        "loss, optimiser and schedule, in the same loop and run directory (docs/keras.md)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` = cuda when available, else cpu")
    dtype: Literal["float32", "float64"] = Field("float32", description="dtype of the parameters and batches")
    precision: Literal["auto", "float32", "bf16"] = Field("auto", description=
        "`bf16`: autocast matmuls and convolutions to bfloat16; `float32`: no autocast; `auto`: bf16 on "
        "CUDA, float32 on the CPU")
    compile: bool = Field(False, description=
        "wrap the model in `torch.compile` (the first steps compile; pays off on long runs)")
    monitor: str = Field("val.loss", json_schema_extra={"allowed": "`train.METRIC` or `val.METRIC`"},
                         description="`split.metric` (metric `loss`, `accuracy`, `rmse`, `mae`) that picks "
                         "`best.pt`, drives early stopping and reduce_on_plateau; accuracy is maximised, "
                         "losses and errors minimised")
    final: Literal["best", "last"] = Field("best", description=
        "which weights the final train/val/test evaluation in summary.json uses: `best` (`best.pt`, falling "
        "back to the last weights when there is none) or `last`")
    early_stopping: EarlyStoppingConfig = Field(EarlyStoppingConfig(), description="early stopping on `train.monitor`")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description=
        "on several processes (`trainlab train --nproc N`, torchrun): `ddp` keeps a whole copy of the model "
        "on every process and all-reduces the gradients; `fsdp` (model.name=gpt) shards parameters, "
        "gradients and optimiser state over the processes (torch's fully_shard), for models that do not fit "
        "one device. One process ignores it")
    accumulate: int = Field(1, ge=1, le=1024, description=
        "gradient accumulation: each optimiser step sums the gradients of this many batches of "
        "`train.batch_size` (backward once per batch, so activations of one batch at a time), the same "
        "update as one batch this many times larger")
    clip_grad_norm: Optional[float] = Field(None, gt=0.0, description=
        "clip the global L2 norm of the gradients to this value; null = no clipping")
    checkpoint_every: Optional[int] = Field(None, ge=1, description=
        "also save `last.pt` every N optimiser steps within an epoch (for long epochs); null = after every "
        "epoch only")
    threads: Optional[int] = Field(None, ge=1, le=1024, description=
        "CPU threads for torch; null = torch's default (reported as `torch_threads` in summary.json)")
    progress: Literal["auto", "bar", "lines", "none"] = Field("auto", description=
        "progress on stderr: `bar`, `lines` (one line per epoch), `none`; `auto` = a bar on a terminal, "
        "lines otherwise")
    logger: Literal["none", "tensorboard", "csv", "mlflow"] = Field("none", description=
        "also send each epoch's metrics row to `tensorboard` (`RUN/tensorboard/`, needs `pip install "
        "tensorboard`), `mlflow` (the active tracking URI, needs `pip install mlflow`) or `csv` "
        "(`RUN/metrics.csv`, rewritten atomically each epoch); `none` = metrics.jsonl only")

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, v: str) -> str:
        split, _, metric = v.partition(".")
        if split not in ("train", "val") or not metric:
            raise ValueError("must look like 'val.loss' or 'val.accuracy' (split 'train' or 'val')")
        return v


class EvalConfig(Section):
    """Evaluation passes: validation after every epoch, the final train/val/test evaluation, and
    `trainlab evaluate`."""

    batch_size: int = Field(1024, ge=1, description="batch size of the evaluation passes (no gradients)")
    every: Optional[int] = Field(None, ge=1, description=
        "with `train.steps`: optimiser steps between evaluations (one metrics.jsonl row each); must divide "
        "`train.steps`; null = once, at the end")
    limit: Optional[int] = Field(None, ge=1, description=
        "evaluate on at most the first N examples of each split (val every epoch; train, val, test in the "
        "final evaluation); null = all; `--smoke` caps it at 512")
