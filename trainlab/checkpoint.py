"""Save and load training state: model, optimiser, scheduler, RNG, progress, config, code version."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import ConfigError, DataError
from .runs import atomic_write_bytes


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to memory, then an atomic rename: a kill mid-save leaves the previous file whole.

    `state` holds only tensors, numbers, strings, lists and dicts, so loading needs no pickled code.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, map_location: Optional[str | torch.device] = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a checkpoint can never execute code when it is loaded."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Checkpoint '{path}' does not exist: the run has not finished an epoch or "
                          "saved on Ctrl-C. Train it first, or point to another run directory.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise DataError(f"Checkpoint '{path}' cannot be read safely ({str(e).splitlines()[0]}). It is "
                        "truncated, corrupt, or holds objects other than tensors and plain values.") from None


def rng_state() -> dict[str, Any]:
    """The global generators that dropout and initialisation draw from."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_weights(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Put a checkpoint's model weights into `model`; returns the whole checkpoint."""
    state = load(path)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise DataError(f"Checkpoint '{path}' does not fit this model ({str(e).splitlines()[0]}).") from None
    return state
