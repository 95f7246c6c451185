"""The exported computation: raw inputs -> the run's own normalisation -> its model -> what predict reports.

Inputs are what a consumer holds, not what the network saw:

- images: (N, C, H, W) pixels as the dataset stores them: uint8 0-255 (Fashion-MNIST, CIFAR,
  image folders after resizing), float32 0-16 for scikit-learn's digits;
- tables: (N, F) float32 feature values before standardisation, columns in the training file's
  order (a text column one-hot encoded, as predict encodes it);
- language models: (N, block_size) int64 token ids of the run's tokenizer.

Outputs: (N, K) float64 class probabilities, (N,) float64 values in the target's units, or for a
language model (N, block_size, V) next-token logits in the model's dtype.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import losses
from ..data import ArraySplit, FileSplit, pixel_scale
from ..data.loader import Batches
from ..evaluate import TrainedRun


def raw_dtype(trained: TrainedRun) -> torch.dtype:
    """dtype of one raw input: uint8 pixels, float32 digits or table features, int64 token ids."""
    splits = trained.splits
    if splits.task == "language_model":
        return torch.int64
    if isinstance(splits.train, FileSplit):
        return torch.uint8
    return splits.train.x.dtype if splits.is_image else torch.float32


def input_spec(trained: TrainedRun) -> dict:
    """Name, dtype, per-example shape and value range of the exported file's one input."""
    splits, dtype = trained.splits, raw_dtype(trained)
    if splits.task == "language_model":
        return {"name": "tokens", "dtype": "int64", "shape": [trained.cfg.model.block_size],
                "range": f"token ids 0..{splits.num_classes - 1}"}
    if splits.is_image:
        top = splits.white * pixel_scale(dtype)  # 255, or 16 for digits
        return {"name": "pixels", "dtype": str(dtype).removeprefix("torch."), "shape": list(splits.input_shape),
                "range": f"raw pixel values 0..{top:g}"}
    return {"name": "features", "dtype": "float32", "shape": list(splits.input_shape),
            "range": "raw feature values, before standardisation"}


def output_spec(trained: TrainedRun) -> dict:
    splits = trained.splits
    if splits.task == "language_model":
        return {"name": "logits", "dtype": str(trained.dtype).removeprefix("torch."),
                "shape": [trained.cfg.model.block_size, splits.num_classes]}
    if splits.task == "regression":
        return {"name": "value", "dtype": "float64", "shape": []}
    return {"name": "probabilities", "dtype": "float64", "shape": [len(splits.classes)]}


class Exportable(nn.Module):
    """The run's model with its input normalisation in front and its output head behind.

    Every step repeats trainlab's own arithmetic, so the file computes what `predict` computes:
    images x * (unit / std) + (-mean / std) in the model's dtype with the constants Batches builds;
    tables ((x - mean) / scale) in float64 as StandardScaler, rounded to float32 as the splits hold
    them; probabilities by losses.predictions in float64.
    """

    def __init__(self, trained: TrainedRun):
        super().__init__()
        splits = trained.splits
        # A CPU copy: the trained model stays where it is (a cuda run still predicts on cuda).
        self.model = copy.deepcopy(trained.model).cpu().eval()
        self.dtype = next(self.model.parameters()).dtype
        self.task, self.loss_name = splits.task, trained.loss_name
        self.kind = "tokens" if splits.task == "language_model" else "image" if splits.is_image else "table"
        if self.kind == "image":
            # An empty split of the raw dtype gives the very constants training used: (1, C, 1, 1).
            empty = ArraySplit(torch.zeros((0, *splits.input_shape), dtype=raw_dtype(trained)),
                               torch.zeros(0, dtype=torch.int64))
            b = Batches(empty, splits, 1, torch.device("cpu"), self.dtype)
            self.register_buffer("mul", b.scale * b.unit)  # the same product Batches._normalise forms
            self.register_buffer("add", b.shift.clone())
        elif self.kind == "table":
            self.register_buffer("mean", torch.tensor(splits.extra["feature_mean"], dtype=torch.float64))  # (F,)
            self.register_buffer("scale", torch.tensor(splits.extra["feature_scale"], dtype=torch.float64))
        if self.task == "regression":
            self.target_mean, self.target_std = splits.extra["target_mean"], splits.extra["target_std"]
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            x = x.to(self.dtype) * self.mul + self.add                      # (N, C, H, W)
        elif self.kind == "table":
            x = ((x.double() - self.mean) / self.scale).float().to(self.dtype)  # (N, F)
        z = self.model(x)                                                   # (N, K), (N, 1) or (N, T, V)
        if self.kind == "tokens":
            return z
        out = losses.predictions(z.double(), self.loss_name, self.task)    # (N, K) or (N,)
        if self.task == "regression":
            out = out * self.target_std + self.target_mean                  # target units
        return out


def check_inputs(trained: TrainedRun, n: int) -> tuple[torch.Tensor, str]:
    """Up to n raw test examples (val when the run has no test split) and the split's name."""
    splits = trained.splits
    name = "test" if splits.test is not None else "val"
    split = getattr(splits, name)
    if splits.task == "language_model":
        # The non-overlapping windows evaluation reads, in order: window i is ids[i*T : (i+1)*T].
        t = trained.cfg.model.block_size
        k = min(n, (len(split.ids) - 1) // t)
        return split.ids[: k * t].view(k, t).long(), name                   # (k, T)
    if isinstance(split, FileSplit):
        from ..data.folder import read_image
        return torch.stack([read_image(f, splits.input_shape[-1]) for f in split.files[:n]]), name
    x = split.x[:n]
    if splits.is_image:
        return x, name                                                      # raw, as stored
    # Tables are held standardised (data._standardise); undo it in float64 and round to float32:
    # values within an ulp of the raw ones, fed to the file and to predict's path alike.
    mean = torch.tensor(splits.extra["feature_mean"], dtype=torch.float64)
    scale = torch.tensor(splits.extra["feature_scale"], dtype=torch.float64)
    return (x.double() * scale + mean).float(), name                       # (k, F)
