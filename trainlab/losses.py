"""Loss functions from the config, and model outputs turned into probabilities or values."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_name(cfg, task: str, num_classes: int) -> str:
    """The loss actually used: `auto` becomes cross_entropy (classification) or mse (regression)."""
    name = cfg.loss.name
    if name == "auto":
        return "mse" if task == "regression" else "cross_entropy"
    if task == "language_model" and name != "cross_entropy":
        raise ConfigError(f"loss.name={name}: a language model predicts the next token with cross_entropy. "
                          "Use loss.name=cross_entropy (or auto).")
    if task == "regression" and name != "mse":
        raise ConfigError(f"loss.name={name} needs class labels, but data.name={cfg.data.name} is a "
                          "regression set. Use loss.name=mse (or auto).")
    if name == "bce_with_logits" and num_classes != 2:
        raise ConfigError(f"loss.name=bce_with_logits is for two classes; data.name={cfg.data.name} has "
                          f"{num_classes}. Use loss.name=cross_entropy.")
    return name


def num_outputs(loss_name: str, task: str, num_classes: int) -> int:
    """Width of the model's last layer: one logit for binary BCE and for regression."""
    if task == "regression" or loss_name == "bce_with_logits":
        return 1
    return num_classes


def build_loss(cfg, task: str, num_classes: int) -> LossFn:
    """loss(output, y) -> scalar mean over the batch.

    output: (B, K) logits, (B, 1) for bce_with_logits and regression; y: (B,) int64 labels or
    (B,) float targets (standardised for regression, so one lr suits both kinds of task).
    """
    name = resolve_name(cfg, task, num_classes)
    if task == "language_model":  # output (B, T, V) logits, y (B, T) next tokens: the mean over tokens
        smoothing = cfg.loss.label_smoothing
        return lambda out, y: F.cross_entropy(out.flatten(0, 1), y.flatten(), label_smoothing=smoothing)
    if name == "cross_entropy":
        smoothing = cfg.loss.label_smoothing
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=smoothing)
    if name == "bce_with_logits":
        return lambda out, y: F.binary_cross_entropy_with_logits(out.squeeze(1), y.to(out.dtype))
    if task == "regression":
        return lambda out, y: F.mse_loss(out.squeeze(1), y)
    # MSE on a classification set: softmax probabilities against one-hot targets (the seed's MSE).
    return lambda out, y: F.mse_loss(out.softmax(1), F.one_hot(y, out.shape[1]).to(out.dtype))


def predictions(output: torch.Tensor, loss_name: str, task: str) -> torch.Tensor:
    """Class probabilities (B, K) for classification, or values (B,) (still standardised) for regression."""
    if task == "regression":
        return output.squeeze(1)
    if loss_name == "bce_with_logits":
        p = torch.sigmoid(output.squeeze(1))
        return torch.stack([1 - p, p], dim=1)
    return output.softmax(1)


def predicted_labels(output: torch.Tensor, loss_name: str) -> torch.Tensor:
    """(B,) predicted class index without forming probabilities ((B, T) next tokens for a language model)."""
    if loss_name == "bce_with_logits":
        return (output.squeeze(1) > 0).long()
    return output.argmax(-1)
