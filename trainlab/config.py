"""The one typed config: every key, its default and its unit, YAML + dotted overrides."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_values import check_size, plain_data, short, too_large
from .errors import ConfigError

DATASETS = (
    "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "imagefolder", "csv",
    "digits", "iris", "wine", "breast_cancer", "diabetes", "text", "tinyshakespeare",
)
TEXT_SETS = ("text", "tinyshakespeare")   # token streams for language models (model.name=gpt)
BUILTIN_MODELS = ("mlp", "cnn", "resnet", "gpt")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu")
OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "reduce_on_plateau")

# Which optional optimiser keys each optimiser reads; the others are ignored with a warning.
OPTIM_KEYS = {
    "gd": {"momentum", "nesterov", "weight_decay", "fused"},
    "sgd": {"momentum", "nesterov", "weight_decay", "fused"},
    "momentum": {"momentum", "nesterov", "weight_decay", "fused"},
    "adagrad": {"weight_decay", "eps", "fused"},
    "rmsprop": {"momentum", "weight_decay", "alpha", "eps"},
    "adam": {"weight_decay", "betas", "eps", "fused"},
    "adamw": {"weight_decay", "betas", "eps", "fused"},
}


SEED_LIMIT = 2**32  # data.split_seed seeds numpy's RandomState, which takes 0 .. 2**32 - 1


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, floats are finite
    (`.inf` or `.nan` is never a meaningful learning rate, penalty or fraction)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _fits_64_bits(cls, v: Any) -> Any:
        if too_large(v):
            raise ValueError("integers must fit in 64 bits (between -2**63 and 2**63 - 1)")
        return v


class AugmentConfig(Section):
    """Applied to the training split only, to image sets only (ignored for tabular data), as batched
    operations on the training device; validation and test batches are never augmented."""

    crop_padding: int = Field(0, ge=0, le=64, description=
                              "pixels of zero padding, then a random crop back to the original size")
    hflip: bool = Field(False, description="random horizontal flip with p = 0.5")
    shift: float = Field(0.0, ge=0, le=0.5, description=
                         "maximum random translation, as a fraction of the image side")
    rotate: float = Field(0.0, ge=0, le=180, description="maximum random rotation, degrees")
    resized_crop: float = Field(0.0, ge=0, lt=1, description=
        "a random square crop of between this fraction and all of the image's area, resized to the whole "
        "image (torchvision's RandomResizedCrop scale, aspect 1); 0 = off")
    brightness: float = Field(0.0, ge=0, le=1, description=
        "random brightness: pixels times a factor drawn from [1 - this, 1 + this] per image "
        "(torchvision's ColorJitter brightness); 0 = off")
    contrast: float = Field(0.0, ge=0, le=1, description=
        "random contrast: each image's pixels pulled toward or pushed from its mean grey by a factor "
        "drawn from [1 - this, 1 + this] (torchvision's ColorJitter contrast); 0 = off")
    noise: float = Field(0.0, ge=0, description=
                         "standard deviation of Gaussian noise added to the normalised input")


class DataConfig(Section):
    """Images are scaled to [0, 1] and normalised per channel with the training split's mean and std,
    on the device, per batch (streamed image folders use mean 0.5 and std 0.25 instead of a pass over
    the files); tabular features are standardised once with the training split's statistics."""

    name: Literal[DATASETS] = Field("fashion-mnist", description=
        "the dataset: MNIST-format sets, CIFAR, `imagefolder` (class folders) and `csv` (both read "
        "`data.path`), one of scikit-learn's bundled sets (`diabetes` is a regression), or text for a "
        "language model: `text` (a UTF-8 file or folder of .txt files at `data.path`) or `tinyshakespeare` "
        "(shipped with trainlab)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description=
        "fraction of the training split held out for validation (stratified, seeded by `data.split_seed`); "
        "0 = no validation split (then `train.monitor` must be `train.*`)")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description=
        "fraction carved out as the test split, only for sets without an official one (scikit-learn sets, "
        "csv, imagefolder without `test/`); text: the last fraction of the token stream (after val), "
        "0 = none (text only)")
    split_seed: int = Field(0, ge=0, lt=SEED_LIMIT, description=
        "seed of the train/val(/test) split and of `data.limit`, independent of `train.seed`")
    dir: Optional[str] = Field(None, description=
        "data root searched first, as `--data-dir` (which wins when both are given)")
    path: Optional[str] = Field(None, description=
        "the CSV file (`csv`) or the image folder root (`imagefolder`); required for those two")
    target: Optional[str] = Field(None, description="csv: the target column's name; null = the last column")
    task: Literal["auto", "classification", "regression"] = Field("auto", description=
        "csv: what the target is; `auto` = classification for text or at most 20 distinct integers, "
        "regression otherwise")
    image_size: int = Field(64, ge=8, description="imagefolder: images are resized to this square side, pixels")
    limit: Optional[int] = Field(None, ge=2, description=
        "use only N training examples (a stratified, seeded subset taken before the validation split, so "
        "train + val ≈ N); null = all; `--smoke` caps it at 512")
    loader: Literal["auto", "device", "stream"] = Field("auto", description=
        "`device`: the split lives on the training device as one tensor; `stream`: batches come through a "
        "DataLoader; `auto`: device unless the split exceeds 4 GiB (imagefolder always streams)")
    workers: int = Field(2, ge=0, description="DataLoader worker processes when streaming")
    tokenizer: Literal["char", "byte", "bpe"] = Field("char", description=
        "text: `char` (the characters of the text), `byte` (UTF-8 bytes, 256 ids) or `bpe` (byte-level BPE "
        "trained on the training split with Hugging Face tokenizers); saved as the run's tokenizer.json")
    vocab_size: Optional[int] = Field(None, ge=257, description=
        "text, `bpe` only: the vocabulary size to train (256 byte tokens plus merges); required for `bpe`")
    download: bool = Field(True, description=
        "download from the canonical address (SHA-256 checked) when no data root has the dataset")
    labelled: Optional[int] = Field(None, ge=2, description=
        "keep the labels of only N training examples (a stratified subset seeded by `data.split_seed`, taken "
        "after the validation split): the few-label experiment; `trainlab pretrain` still sees every "
        "training image; null = all")


class ModelConfig(Section):
    """Input and output widths come from the data; `trainlab check` prints the layers, shapes,
    parameters and multiply-accumulates a config builds."""

    name: str = Field("mlp", json_schema_extra={"allowed": "`mlp`, `cnn`, `resnet`, `gpt` or `package.module:Class`"},
                      description="`mlp`, `cnn` (LeNet-5 style), `resnet` (CIFAR ResNet), `gpt` (a decoder-only "
                      "transformer language model, for text data), or a custom `nn.Module` class as "
                      "`package.module:Class`")
    hidden: list[int] = Field([128], json_schema_extra={"allowed": "each ≥ 1"}, description=
        "mlp: hidden layer widths (`[]` = linear / logistic regression)")
    activation: Literal[ACTIVATIONS] = Field("relu", description="activation after each hidden layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=
        "dropout probability: mlp after each hidden activation, cnn after each fully connected hidden "
        "layer, resnet before the final linear layer")
    batch_norm: bool = Field(False, description=
        "mlp: BatchNorm1d before each hidden activation; cnn: BatchNorm2d after each conv (resnet always "
        "has it)")
    channels: list[int] = Field([16, 32], json_schema_extra={"allowed": "each ≥ 1"}, description=
        "cnn: output channels of the two 5x5 conv layers (LeNet-5: `[6, 16]`), then fully connected "
        "120 → 84 → outputs")
    depth: int = Field(20, ge=8, json_schema_extra={"allowed": "6n+2: 8, 14, 20, 32, 44, 56, 110, …"},
                       description="resnet: number of layers, 6n+2")
    width: int = Field(16, ge=1, description="resnet: channels of the first stage (doubled per stage)")
    n_layer: int = Field(4, ge=1, description="gpt: transformer blocks")
    n_head: int = Field(4, ge=1, description="gpt: attention heads per block (must divide `model.n_embd`)")
    n_embd: int = Field(128, ge=1, description="gpt: width of the token embeddings and the residual stream")
    block_size: int = Field(64, ge=1, description="gpt: context length, tokens (the windows trained on)")
    bias: bool = Field(True, description="gpt: biases in the linear layers and LayerNorms")
    rope: bool = Field(False, description="gpt: rotary position embeddings instead of learned positions")
    init_from: Optional[str] = Field(None, description=
        "a `trainlab pretrain` run directory: the model starts from its encoder (every layer but the last, "
        "from best.pt, else last.pt); the last layer starts fresh")
    freeze: bool = Field(False, description=
        "with `model.init_from`: train the last layer only (a linear probe), the encoder's weights and "
        "batch-norm statistics kept as pre-trained; `false` fine-tunes every layer")
    kwargs: dict[str, Any] = Field({}, description=
        "custom model: keyword arguments for the class; `input_shape` and `num_outputs` are passed too when "
        "its constructor names them")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v in BUILTIN_MODELS or ":" in v:
            return v
        close = difflib.get_close_matches(v, BUILTIN_MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"must be one of {', '.join(BUILTIN_MODELS)} or 'package.module:Class'.{hint}")

    @field_validator("kwargs")
    @classmethod
    def _plain(cls, v: dict[str, Any]) -> dict[str, Any]:
        plain_data(v)  # config.yaml must read back the same kwargs
        return v

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v):
            raise ValueError("every width must be >= 1")
        return v

    @field_validator("depth")
    @classmethod
    def _depth(cls, v: int) -> int:
        if (v - 2) % 6:
            raise ValueError("must be 6n+2 (8, 14, 20, 32, 44, 56, 110)")
        return v


class LossConfig(Section):
    """Regression targets are standardised with the training split's mean and std, so the loss (mse)
    is in standardised units and one learning rate suits every task; `rmse` and `mae` in the metrics
    are reported in the target's own units."""

    name: Literal["auto", "cross_entropy", "mse", "bce_with_logits"] = Field("auto", description=
        "`auto` = `cross_entropy` for classification, `mse` for regression; `cross_entropy` on logits; `mse` "
        "on a classification set compares softmax probabilities with one-hot targets (the seed's MSE); "
        "`bce_with_logits` for two classes, one output logit")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross_entropy only: label smoothing ε")


class OptimConfig(Section):
    """All optimisers are torch.optim's. Keys an optimiser does not use (`optim.momentum` for adam,
    `optim.betas` for sgd, …) are ignored with a warning, so `optim.name=adam` can override a config
    written for SGD."""

    name: Literal[OPTIMIZERS] = Field("sgd", description=
        "`gd` (full batch: one step per epoch on the whole training split, `train.batch_size` ignored), "
        "`sgd` (mini-batch), `momentum` (SGD with momentum 0.9 by default), `adagrad`, `rmsprop`, `adam`, "
        "`adamw`")
    lr: float = Field(0.01, gt=0.0, description="learning rate (the peak lr for `schedule.name=onecycle`)")
    momentum: Optional[float] = Field(None, ge=0.0, lt=1.0, description=
        "momentum for gd, sgd, momentum, rmsprop; null = 0, except 0.9 for `optim.name=momentum`")
    nesterov: bool = Field(False, description="Nesterov momentum (gd, sgd, momentum; only when momentum > 0)")
    weight_decay: Optional[float] = Field(None, ge=0.0, description=
        "weight decay inside the optimiser, on all parameters (decoupled for adamw); null = torch.optim's "
        "default: 0, or 0.01 for adamw")
    betas: tuple[float, float] = Field((0.9, 0.999), json_schema_extra={"allowed": "each in [0, 1)"},
                                       description="adam, adamw: decay rates of the first and second moment "
                                       "estimates")
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description=
        "rmsprop: smoothing constant of the squared-gradient average")
    eps: Optional[float] = Field(None, gt=0.0, description=
        "term added to the denominator (adagrad, rmsprop, adam, adamw); null = torch.optim's default for "
        "the optimiser")
    fused: bool = Field(True, description=
        "use torch.optim's fused kernel (sgd/momentum/gd, adagrad, adam, adamw; not rmsprop): one kernel "
        "updates every parameter instead of a Python loop over them. It rounds differently from the loop by "
        "about 1e-8 per step; `false` gives the loop")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v


class ScheduleConfig(Section):
    """Every schedule is stepped once per optimiser step (so warm-up can be fractional and a mid-epoch
    resume is exact); `step` and `exponential` change the lr only at epoch boundaries, so they equal
    the usual per-epoch schedules. `cosine` and `onecycle` span `train.epochs` (the cosine after the
    warm-up); an early stop ends them early. `reduce_on_plateau` alone is stepped once per epoch with
    the monitored value."""

    name: Literal[SCHEDULES] = Field("constant", description="learning-rate schedule (torch.optim.lr_scheduler)")
    warmup_epochs: float = Field(0.0, ge=0.0, description=
        "linear warm-up length, epochs (may be fractional, counted in optimiser steps); not with `onecycle` "
        "or `reduce_on_plateau`")
    warmup_steps: Optional[int] = Field(None, ge=0, description=
        "linear warm-up length in optimiser steps; replaces `schedule.warmup_epochs` when set (the usual "
        "unit with `train.steps`)")
    warmup_start: float = Field(0.1, gt=0.0, le=1.0, description=
        "warm-up starts at `warmup_start × optim.lr` and rises linearly to `optim.lr`")
    step_epochs: int = Field(10, ge=1, description="step: multiply the lr by `schedule.gamma` every this many epochs")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description=
        "factor: step (every `step_epochs`), exponential (every epoch), reduce_on_plateau (on a plateau)")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: the final learning rate")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description=
        "onecycle: fraction of all steps spent raising the lr to `optim.lr`")
    patience: int = Field(2, ge=0, description=
        "reduce_on_plateau: epochs without improvement of `train.monitor` before the lr is cut")


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


class PretrainConfig(Section):
    """`trainlab pretrain`: self-supervised pre-training of an image encoder (`mlp`, `cnn`, `resnet`) on
    the training images without their labels; `train` ignores this section."""

    objective: Literal["contrastive", "masked"] = Field("contrastive", description=
        "`contrastive`: SimCLR's NT-Xent loss between two augmented views of every image (the views are "
        "made on the device by `pretrain.augment`); `masked`: reconstruct the pixels of hidden patches")
    augment: AugmentConfig = Field(AugmentConfig(hflip=True, rotate=10, resized_crop=0.3, noise=0.2),
                                   description="contrastive: the augmentation that makes each view")
    temperature: float = Field(0.5, gt=0.0, le=10.0, description=
        "contrastive: the NT-Xent temperature τ (the loss of a batch of B images is over its 2B views; "
        "evaluation passes then take `train.batch_size` images at a time, as training does)")
    positives: Literal["views", "neighbours"] = Field("views", description=
        "contrastive: what each image's second view is made from. `views`: the image itself (SimCLR); "
        "`neighbours`: one of its `pretrain.neighbours` nearest training images in pixel space, drawn anew "
        "at every step (DrLIM's positives, Hadsell, Chopra & LeCun 2006), "
        "found before training with scikit-learn's NearestNeighbors; needs images held in memory")
    neighbours: int = Field(5, ge=1, le=100, description=
        "contrastive with positives=neighbours: how many nearest training images each image's partner is drawn from")
    projection_hidden: Optional[int] = Field(None, ge=1, description=
        "contrastive: width of the projection head's hidden layer; null = the encoder's output width")
    projection: int = Field(128, ge=1, description=
        "contrastive: output width of the projection head (a 2-layer MLP dropped after pre-training)")
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="masked: the fraction of patches hidden")
    patch: int = Field(4, ge=1, description="masked: side of the square patches hidden, pixels")
    probe_examples: int = Field(5000, ge=10, description=
        "labelled training examples the linear probe is fitted on at every evaluation (scikit-learn's "
        "logistic regression on the encoder's features; scored as `val.probe_accuracy`)")


class Config(Section):
    """The whole config: nine sections and the run's name."""

    data: DataConfig = Field(DataConfig(), description="the dataset, its splits and how batches are fed")
    model: ModelConfig = Field(ModelConfig(), description="the network")
    loss: LossConfig = Field(LossConfig(), description="the loss function")
    optim: OptimConfig = Field(OptimConfig(), description="the optimiser (torch.optim)")
    schedule: ScheduleConfig = Field(ScheduleConfig(), description="the learning-rate schedule")
    regularize: RegularizeConfig = Field(RegularizeConfig(), description="L1/L2 penalties and data augmentation")
    train: TrainConfig = Field(TrainConfig(), description="the training loop")
    eval: EvalConfig = Field(EvalConfig(), description="evaluation passes")
    pretrain: PretrainConfig = Field(PretrainConfig(), description="self-supervised pre-training (`trainlab pretrain`)")
    name: str = Field("run", description=
        "run name, used in the default run directory `runs/<name>-<timestamp>`; the config file's stem "
        "unless set")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or v in (".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError("must be a non-empty folder name without '/', '\\' or NUL characters (it names the "
                             "run directory runs/<name>-<timestamp>)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.schedule.name == "reduce_on_plateau" and self.schedule.warmup_epochs:
            raise ValueError("schedule.warmup_epochs cannot be combined with reduce_on_plateau")
        if self.schedule.name == "onecycle" and self.schedule.warmup_epochs:
            raise ValueError("onecycle has its own warm-up (schedule.pct_start); set schedule.warmup_epochs=0")
        if self.data.name in ("csv", "imagefolder", "text") and not self.data.path:
            raise ValueError(f"data.name={self.data.name} needs data.path (the file or folder to read)")
        text, gpt = self.data.name in TEXT_SETS, self.model.name == "gpt"
        if text != gpt:
            raise ValueError(f"model.name={self.model.name} and data.name={self.data.name} do not fit: text data "
                             "(text, tinyshakespeare) trains model.name=gpt, and gpt trains on text")
        if self.data.test_fraction == 0 and not text:
            raise ValueError("data.test_fraction=0 is for text data only: other sets without an official test "
                             "split need one carved out")
        if self.data.tokenizer == "bpe" and text and self.data.vocab_size is None:
            raise ValueError("data.tokenizer=bpe needs data.vocab_size (e.g. 512: 256 byte tokens + 256 merges)")
        if gpt and self.model.n_embd % self.model.n_head:
            raise ValueError(f"model.n_embd={self.model.n_embd} is not divisible by model.n_head="
                             f"{self.model.n_head}: each head gets n_embd / n_head channels")
        if self.model.freeze and not self.model.init_from:
            raise ValueError("model.freeze=true keeps a pre-trained encoder fixed: set model.init_from to a "
                             "`trainlab pretrain` run directory, or model.freeze=false")
        if text and (self.model.init_from or self.data.labelled):
            key = "model.init_from" if self.model.init_from else "data.labelled"
            raise ValueError(f"{key} is for image and tabular classifiers; a language model has no labels to "
                             "keep or encoder to start from")
        if self.train.steps is not None:
            every = self.eval.every or self.train.steps
            if self.train.steps % every:
                low = self.train.steps // every * every
                raise ValueError(f"eval.every={every} does not divide train.steps={self.train.steps}: use "
                                 f"train.steps={low or every} or {low + every}")
        return self

    def to_dict(self) -> dict:
        """Plain YAML-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")


def set_dotted(tree: dict, key: str, value: Any) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"Override key {key!r} must be a dotted string such as 'optim.lr'.")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"Override key {short(key)} has an empty part: write dotted keys such as 'optim.lr'.")
    node = tree
    for i, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[:i + 1])
        if prefix in KNOWN_KEYS and prefix not in MAPPING_KEYS:
            raise ConfigError(f"Override {short(key)}: '{prefix}' is a value, not a section (it has no key "
                              f"{short(parts[i + 1])}). Set it with {prefix}=VALUE.")
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Override {short(key)}: '{prefix}' is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _known_keys(model: type[BaseModel] = Config, prefix: str = "", mappings: bool = False) -> list[str]:
    """Every dotted key (sections and values); `mappings`: only those holding keys of their own
    (sections, and dict values such as model.kwargs)."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        ann = field.annotation
        section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if not mappings or section or getattr(ann, "__origin__", ann) is dict:
            keys.append(dotted)
        if section:
            keys += _known_keys(ann, dotted + ".", mappings)
    return keys


KNOWN_KEYS = _known_keys()
MAPPING_KEYS = set(_known_keys(mappings=True))

def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.05' -> ('optim.lr', 0.05); the value is read as YAML ('[256,128]' is a list)."""
    key, eq, raw = text.partition("=")
    if not eq:
        raise ConfigError(f"Override {short(text)} must look like key=value, e.g. optim.lr=0.05.")
    if not key.strip():
        raise ConfigError(f"Override {short(text)}: the key is empty. Write key=value, e.g. optim.lr=0.05.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"Override {short(key.strip())}: the value is nested too deeply to read.") from None
    return key.strip(), value


def _explain(err: ValidationError, raw: dict) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if len(loc) > 120:  # a key pasted by mistake (a whole file as a key): its beginning names it
            loc = loc[:100] + f"... ({len(loc)} characters)"
        value = e.get("input")
        if e["type"] == "extra_forbidden" and not all(str(part).strip() for part in e["loc"]):
            lines.append(f"A config key is empty ({loc!r}): every key and section needs a name, e.g. optim.lr.")
        elif e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, KNOWN_KEYS, n=1, cutoff=0.6) or \
                difflib.get_close_matches(loc.lower(), KNOWN_KEYS, n=1, cutoff=0.6)  # DATA.NAME: data.name
            if not close:  # a misspelt section name or key: match on the last part
                last = loc.split(".")[-1]
                same_section = [k for k in KNOWN_KEYS if k.rsplit(".", 1)[0] == loc.rsplit(".", 1)[0]]
                close = difflib.get_close_matches(last, [k.split(".")[-1] for k in same_section], n=1)
                close = [loc.rsplit(".", 1)[0] + "." + close[0]] if close and "." in loc else close
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"Unknown config key '{loc}'.{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "model_type":
                msg = "it is a section: give a mapping of its keys (or set them one by one, as dotted keys)"
            if loc:
                lines.append(f"Config key '{loc}' = {short(value)} is not allowed: {msg}.")
            else:  # a check across keys: the message names them
                lines.append(f"The config is not allowed: {msg}.")
    lines.append("See the config reference (docs/config.md; `make docs` builds the site) for every key, "
                 "its type, default, allowed values and meaning.")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Read a YAML config, apply dotted overrides, validate.

    >>> cfg = load_config("examples/seed_mlp.yaml", ["optim.lr=0.05", "train.epochs=5"])
    """
    raw: dict = {}
    name = "run"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file '{path}' does not exist. Give a YAML file, e.g. examples/seed_mlp.yaml.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file '{path}' is not valid YAML: {e}") from None
        except RecursionError:
            raise ConfigError(f"Config file '{path}' is nested too deeply to read.") from None
        except (UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"Config file '{path}' cannot be read as text ({e}).") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file '{path}' must hold a mapping of sections (data, model, ...).")
        name = path.stem
    raw.setdefault("name", name)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        check_size(value, key if isinstance(key, str) else repr(key))
        set_dotted(raw, key, value)
    return build_config(raw)


def build_config(raw: dict) -> Config:
    """Validate a plain dict into a Config, with the errors users can read."""
    check_size(raw)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, raw)) from None
    _warn_unused_optim_keys(cfg, raw.get("optim") or {})
    return cfg


def _warn_unused_optim_keys(cfg: Config, raw_optim: dict) -> None:
    used = OPTIM_KEYS[cfg.optim.name]
    defaults = OptimConfig()
    ignored = [k for k, v in raw_optim.items() if k not in ("name", "lr") and k not in used
               and k in OptimConfig.model_fields and getattr(cfg.optim, k) != getattr(defaults, k)]
    if ignored:
        warnings.warn(
            f"optim.name={cfg.optim.name} does not use {', '.join('optim.' + k for k in ignored)}; "
            "ignored.", stacklevel=3)


def save_config(cfg: Config, path: Path) -> None:
    from .runs import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
