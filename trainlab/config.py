"""The one typed config: every key, its default and its unit, YAML + dotted overrides."""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

DATASETS = (
    "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "imagefolder", "csv",
    "digits", "iris", "wine", "breast_cancer", "diabetes",
)
BUILTIN_MODELS = ("mlp", "cnn", "resnet")
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


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(Section):
    # Batched, on the training device, training split only; images only.
    crop_padding: int = Field(0, ge=0)      # pixels of zero padding before a random crop back to size
    hflip: bool = False                      # random horizontal flip, p = 0.5
    shift: float = Field(0.0, ge=0, le=0.5)  # max random translation, fraction of the image side
    rotate: float = Field(0.0, ge=0, le=180)  # max random rotation, degrees
    noise: float = Field(0.0, ge=0)          # std of Gaussian noise added to the normalised input


class DataConfig(Section):
    name: Literal[DATASETS] = "fashion-mnist"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)   # of the training split, stratified, seeded
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # only for sets without an official test split
    split_seed: int = 0            # seed of the train/val(/test) split, independent of train.seed
    dir: Optional[str] = None      # data root searched first (as --data-dir)
    path: Optional[str] = None     # csv file or imagefolder root
    target: Optional[str] = None   # csv: the target column (default: the last column)
    task: Literal["auto", "classification", "regression"] = "auto"  # csv: what the target is
    image_size: int = Field(64, ge=8)   # imagefolder: images are resized to this square (pixels)
    limit: Optional[int] = Field(None, ge=2)  # use only the first N training examples
    loader: Literal["auto", "device", "stream"] = "auto"  # in-memory tensor on the device, or streamed
    workers: int = Field(2, ge=0)  # DataLoader workers when streaming
    download: bool = True          # download from the canonical address when not found


class ModelConfig(Section):
    name: str = "mlp"              # mlp | cnn | resnet | "package.module:Class"
    hidden: list[int] = [128]      # mlp: hidden layer widths
    activation: Literal[ACTIVATIONS] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # probability, after each hidden activation
    batch_norm: bool = False       # mlp: BatchNorm1d before each activation
    channels: list[int] = [16, 32]  # cnn: channels of the two 5x5 conv layers (LeNet: [6, 16])
    depth: int = Field(20, ge=8)   # resnet: 6n+2 layers (8, 20, 32, 44, 56)
    width: int = Field(16, ge=1)   # resnet: channels of the first stage (doubles per stage)
    kwargs: dict[str, Any] = {}    # custom model: keyword arguments for the class

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v in BUILTIN_MODELS or ":" in v:
            return v
        close = difflib.get_close_matches(v, BUILTIN_MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"must be one of {', '.join(BUILTIN_MODELS)} or 'package.module:Class'.{hint}")

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
    # auto: cross_entropy for classification, mse for regression.
    # mse on a classification set compares softmax probabilities with one-hot targets.
    name: Literal["auto", "cross_entropy", "mse", "bce_with_logits"] = "auto"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # cross_entropy only


class OptimConfig(Section):
    name: Literal[OPTIMIZERS] = "sgd"  # gd = full-batch: one step per epoch on the whole train split
    lr: float = Field(0.01, gt=0.0)    # learning rate (the peak lr for onecycle)
    momentum: Optional[float] = Field(None, ge=0.0, lt=1.0)  # default 0 (momentum: 0.9)
    nesterov: bool = False
    weight_decay: Optional[float] = Field(None, ge=0.0)  # L2 as weight decay (decoupled for adamw);
    # None = torch.optim's default: 0, or 0.01 for adamw
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    alpha: float = Field(0.99, gt=0.0, lt=1.0)  # rmsprop smoothing constant
    eps: Optional[float] = Field(None, gt=0.0)  # None = torch.optim's default for the optimiser
    # torch.optim's fused kernel (sgd/momentum/gd, adagrad, adam, adamw): one kernel for all
    # parameters instead of a Python loop; rounds differently from the loop by ~1e-8 per step.
    fused: bool = True

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v


class ScheduleConfig(Section):
    name: Literal[SCHEDULES] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warm-up from warmup_start * lr (epochs, may be fractional)
    warmup_start: float = Field(0.1, gt=0.0, le=1.0)
    step_epochs: int = Field(10, ge=1)   # step: multiply lr by gamma every step_epochs epochs
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # step, exponential (per epoch), reduce_on_plateau factor
    min_lr: float = Field(0.0, ge=0.0)   # cosine: final lr
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)  # onecycle: fraction of steps spent rising
    patience: int = Field(2, ge=0)       # reduce_on_plateau: epochs without improvement of train.monitor


class RegularizeConfig(Section):
    l1: float = Field(0.0, ge=0.0)  # adds l1 * sum|w| over weight matrices/kernels to the loss
    l2: float = Field(0.0, ge=0.0)  # adds l2/2 * sum w^2 over weight matrices/kernels to the loss
    augment: AugmentConfig = AugmentConfig()


class EarlyStoppingConfig(Section):
    patience: Optional[int] = Field(None, ge=1)  # epochs without improvement of train.monitor; None = off
    min_delta: float = Field(0.0, ge=0.0)        # smallest change that counts as improvement


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"  # parameter and input dtype
    # auto: bf16 autocast on CUDA (matmuls and convolutions in bfloat16), float32 on the CPU.
    precision: Literal["auto", "float32", "bf16"] = "auto"
    compile: bool = False          # torch.compile the model (pays off for long runs; first steps compile)
    monitor: str = "val.loss"      # picks best.pt, early stopping and reduce_on_plateau
    final: Literal["best", "last"] = "best"  # which checkpoint the final test evaluation uses
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    clip_grad_norm: Optional[float] = Field(None, gt=0.0)  # max global L2 norm of the gradients
    checkpoint_every: Optional[int] = Field(None, ge=1)   # also save last.pt every N steps (mid-epoch)
    threads: Optional[int] = Field(None, ge=1)  # CPU threads (default: torch's, reported)
    progress: Literal["auto", "bar", "lines", "none"] = "auto"  # bar on a terminal, else a line per epoch
    logger: Literal["none", "tensorboard", "csv", "mlflow"] = "none"  # also log each epoch's row there

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, v: str) -> str:
        split, _, metric = v.partition(".")
        if split not in ("train", "val") or not metric:
            raise ValueError("must look like 'val.loss' or 'val.accuracy' (split 'train' or 'val')")
        return v


class EvalConfig(Section):
    batch_size: int = Field(1024, ge=1)  # batch size for evaluation passes (no gradients)
    limit: Optional[int] = Field(None, ge=1)  # evaluate on at most the first N examples of val/test


class Config(Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    regularize: RegularizeConfig = RegularizeConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    name: str = "run"  # run name: the config file's stem unless set

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.schedule.name == "reduce_on_plateau" and self.schedule.warmup_epochs:
            raise ValueError("schedule.warmup_epochs cannot be combined with reduce_on_plateau")
        if self.schedule.name == "onecycle" and self.schedule.warmup_epochs:
            raise ValueError("onecycle has its own warm-up (schedule.pct_start); set schedule.warmup_epochs=0")
        if self.data.name in ("csv", "imagefolder") and not self.data.path:
            raise ValueError(f"data.name={self.data.name} needs data.path (the file or folder to read)")
        return self

    def to_dict(self) -> dict:
        """Plain YAML-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")


def set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Override '{key}': '{part}' is a value, not a section.")
        node = child
    node[parts[-1]] = value


def _known_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        keys.append(dotted)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, dotted + ".")
    return keys


KNOWN_KEYS = _known_keys()


def parse_override(text: str) -> tuple[str, Any]:
    """'optim.lr=0.05' -> ('optim.lr', 0.05); the value is read as YAML ('[256,128]' is a list)."""
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"Override '{text}' must look like key=value, e.g. optim.lr=0.05.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _explain(err: ValidationError, raw: dict) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int) or True)
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc, KNOWN_KEYS, n=1, cutoff=0.6)
            if not close:  # a misspelt section name or key: match on the last part
                last = loc.split(".")[-1]
                same_section = [k for k in KNOWN_KEYS if k.rsplit(".", 1)[0] == loc.rsplit(".", 1)[0]]
                close = difflib.get_close_matches(last, [k.split(".")[-1] for k in same_section], n=1)
                close = [loc.rsplit(".", 1)[0] + "." + close[0]] if close and "." in loc else close
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"Unknown config key '{loc}'.{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            where = f"'{loc}'" if loc else "the config"
            lines.append(f"Config key {where} = {value!r} is not allowed: {msg}.")
    lines.append("See the config reference in README.md for every key, its default and meaning.")
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
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file '{path}' must hold a mapping of sections (data, model, ...).")
        name = path.stem
    raw.setdefault("name", name)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        set_dotted(raw, key, value)
    return build_config(raw)


def build_config(raw: dict) -> Config:
    """Validate a plain dict into a Config, with the errors users can read."""
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
