"""Where and in what precision a run computes: the device from train.device, bf16 autocast from train.precision."""

from __future__ import annotations

import torch

from .config import Config
from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """train.device: auto picks CUDA when one is visible, the CPU otherwise."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available. Use train.device=auto or cpu.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(cfg: Config, device: torch.device):
    """bf16 autocast where asked (or auto on CUDA); a no-op context otherwise."""
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def place_model(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The model on the run's device and dtype; convolutions channels-last on CUDA (cuDNN's fast layout)."""
    model = model.to(device=device, dtype=dtype)
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model
