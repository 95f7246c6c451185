"""Datasets as train/val/test splits: one loader per format, one splitting rule for all."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Union

import numpy as np
import torch

from ..errors import DataError

IMAGE_SETS = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "imagefolder", "digits")


@dataclass
class ArraySplit:
    """Examples held in memory.

    x: (N, C, H, W) uint8 images (or float32 pixel values for `digits`), or (N, F) float32 features.
    y: (N,) int64 class indices, or (N,) float32 regression targets.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "ArraySplit":
        index_t = torch.as_tensor(index, dtype=torch.long)
        return ArraySplit(self.x[index_t], self.y[index_t])


@dataclass
class FileSplit:
    """Examples streamed from image files (imagefolder): never loaded whole."""

    files: list[str]
    y: torch.Tensor  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray) -> "FileSplit":
        return FileSplit([self.files[i] for i in index], self.y[torch.as_tensor(index, dtype=torch.long)])


@dataclass
class TokenSplit:
    """A stretch of a token stream (language models): consecutive token ids of the text."""

    ids: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.ids)


Split = Union[ArraySplit, FileSplit, TokenSplit]


@dataclass
class Source:
    """What a format module returns: the dataset as published, before validation splitting."""

    train: Split
    test: Optional[Split]          # None: the set has no official test split; one is carved out
    task: str                      # "classification" | "regression"
    classes: Optional[list[str]]   # class names, index = label; None for regression
    image_size: Optional[int] = None  # imagefolder: side of the square images streamed
    white: float = 1.0  # a white pixel, in the units the loader augments in (see Splits.white)


@dataclass
class Splits:
    """Train / validation / test splits plus what a model and a loss need to know."""

    train: Split
    val: Optional[Split]
    test: Split
    task: str                       # "classification" | "regression"
    classes: Optional[list[str]]
    input_shape: tuple[int, ...]    # one example: (C, H, W) or (F,)
    is_image: bool
    # Per-channel (images) mean and std of the raw training values, applied per batch on the device;
    # tabular features are standardised once on load, so these are None there.
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    name: str = ""
    extra: dict = field(default_factory=dict)
    # A white pixel in the units augmentation works in (raw values times the loader's unit: uint8
    # sets are divided by 255, so 1; digits' floats are kept as published, 0..16, so 16). Brightness
    # and contrast clamp to [0, white].
    white: float = 1.0

    @property
    def num_classes(self) -> int:
        """Classes; for a language model the vocabulary (each next token is one of them)."""
        if self.task == "language_model":
            return self.extra["vocab_size"]
        return len(self.classes) if self.classes else 0

    @property
    def num_outputs(self) -> int:
        """Width of the model's last layer: classes, or 1 for regression."""
        return self.num_classes if self.task == "classification" else 1


def _stratify(y: torch.Tensor, task: str) -> Optional[np.ndarray]:
    if task != "classification":
        return None
    labels = y.numpy()
    counts = np.bincount(labels)
    # A class with a single example cannot be stratified; fall back to a plain shuffle.
    return labels if counts[counts > 0].min() >= 2 else None


def split_off(split: Split, fraction: float, task: str, seed: int) -> tuple[Split, Split]:
    """Stratified, seeded split of `split` into (rest, held_out) with len(held_out) ~ fraction."""
    from .holdout import holdout_indices

    n_held = int(round(fraction * len(split)))
    if n_held < 1 or n_held >= len(split):
        raise DataError(
            f"Cannot hold out a fraction {fraction} of {len(split)} examples: it leaves an empty split. "
            "Change data.val_fraction / data.test_fraction or use more data.")
    stratify = _stratify(split.y, task)
    # Stratifying needs one example of every class on both sides; with fewer, a plain shuffle.
    if stratify is not None and min(n_held, len(split) - n_held) < len(np.unique(stratify)):
        stratify = None
    rest, held = holdout_indices(len(split), n_held, seed, stratify)
    return split.subset(np.sort(rest)), split.subset(np.sort(held))


def load(cfg, data_dir: Optional[str] = None, tokenizer=None) -> Splits:
    """Load the dataset `cfg.data` names and split it.

    >>> splits = load(load_config("examples/seed_mlp.yaml"))
    >>> splits.train.x.shape      # torch.Size([54000, 1, 28, 28])
    Text (language models): `tokenizer`, a text.Tokenizer read from a run's tokenizer.json, is used
    instead of fitting one.
    """
    d = cfg.data
    data_dir = data_dir or d.dir
    if d.name in ("text", "tinyshakespeare"):
        from . import text
        return text.token_splits(cfg, data_dir, tokenizer)
    if d.name in ("mnist", "fashion-mnist", "kmnist"):
        from . import idx
        source = idx.load(d.name, data_dir, download=d.download)
    elif d.name in ("cifar10", "cifar100"):
        from . import cifar
        source = cifar.load(d.name, data_dir, download=d.download)
    elif d.name == "imagefolder":
        from . import folder
        source = folder.load(d.path, image_size=d.image_size)
    elif d.name == "csv":
        from . import tabular
        source = tabular.load_csv(d.path, target=d.target, task=d.task)
    else:
        from . import tabular
        source = tabular.load_sklearn(d.name)
    return make_splits(source, cfg)


def make_splits(source: Source, cfg) -> Splits:
    """Carve test (if the set has none), limit, then validation, all seeded by data.split_seed."""
    d = cfg.data
    train, test = source.train, source.test
    if test is None:
        train, test = split_off(train, d.test_fraction, source.task, d.split_seed)
    if d.limit is not None and d.limit < len(train):
        train, _ = split_off(train, 1 - d.limit / len(train), source.task, d.split_seed)
    val = None
    if d.val_fraction > 0:
        train, val = split_off(train, d.val_fraction, source.task, d.split_seed)
    unlabelled = train  # every training example, for the normalisation statistics
    if d.labelled is not None:
        train = keep_labelled(train, d.labelled, source.task, d.split_seed)
    is_image = d.name in IMAGE_SETS
    if isinstance(train, FileSplit):
        input_shape = (3, source.image_size, source.image_size)
    else:
        input_shape = tuple(train.x.shape[1:])
    splits = Splits(train=train, val=val, test=test, task=source.task, classes=source.classes,
                    input_shape=input_shape, is_image=is_image, name=d.name, white=source.white)
    if source.task == "regression":
        splits.extra["target_mean"] = float(train.y.float().mean())
        splits.extra["target_std"] = float(train.y.float().std().clamp_min(1e-12))
    if is_image:  # with data.labelled: the statistics of all training images (they need no labels)
        splits.mean, splits.std = channel_stats(unlabelled)
    elif isinstance(train, ArraySplit):
        _standardise(splits)
    return splits


def keep_labelled(train: Split, labelled: int, task: str, seed: int) -> Split:
    """data.labelled: a stratified, seeded subset of `labelled` training examples (the few-label experiment)."""
    if labelled >= len(train):
        raise DataError(f"data.labelled={labelled} keeps no fewer labels than the {len(train)} training examples "
                        "there are: lower it, or set data.labelled=null to use every label.")
    kept, _ = split_off(train, 1 - labelled / len(train), task, seed)
    return kept


def pixel_scale(dtype: torch.dtype) -> float:
    """The raw value of a [0, 1] pixel's 1: 255 for uint8 images, 1 for float ones (digits are then
    0..16 on that scale, Splits.white = 16)."""
    return 255.0 if dtype == torch.uint8 else 1.0


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw training values (images scaled to [0, 1])."""
    if isinstance(split, FileSplit):
        # Streaming sets are not read whole for statistics: the ImageNet-style convention
        # of mid-grey 0.5 / 0.25 keeps inputs in a sane range without a pass over the files.
        return [0.5] * 3, [0.25] * 3
    x = split.x
    scale = pixel_scale(x.dtype)
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    mean = torch.stack([row.double().mean() / scale for row in flat])
    std = torch.stack([row.double().std() / scale for row in flat]).clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def _standardise(splits: Splits) -> None:
    """Tabular features: zero mean, unit variance, fitted on the training split only."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(splits.train.x.double().numpy())

    def apply(s: Optional[ArraySplit]) -> Optional[ArraySplit]:
        if s is None:
            return None
        return replace(s, x=torch.from_numpy(scaler.transform(s.x.double().numpy())).float())

    splits.train, splits.val, splits.test = apply(splits.train), apply(splits.val), apply(splits.test)
    splits.extra["feature_mean"] = scaler.mean_.tolist()
    splits.extra["feature_scale"] = scaler.scale_.tolist()
