"""Save and load training state: model, optimiser, scheduler, RNG, progress, config, code version.

A checkpoint is the zip file torch.save writes, with its SHA-256 digest as the zip's archive
comment (the last bytes of the file, `trainlab-sha256:<64 hex digits>`) and a format number
inside (`trainlab_format`). The file stays an ordinary torch checkpoint: `torch.load(path,
weights_only=True)`, `unzip -z` and zipfile read it as they would without the comment.

Why a comment and not a sidecar `last.pt.sha256`: the digest and the bytes it covers are written
by one atomic rename, so no kill can leave a new checkpoint beside an old digest (or the reverse),
a pair that would look valid and mismatch. A file whose comment was damaged is still known to be
trainlab's own by its `trainlab_format` key, so it is refused rather than taken for an old one.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import ConfigError, DataError
from .runs import atomic_write_bytes

FORMAT = 1  # the checkpoint layout; a trainlab that changes it raises this, an older one then refuses the file
_PREFIX = b"trainlab-sha256:"
_COMMENT = len(_PREFIX) + 64          # bytes of the archive comment
_EOCD = b"PK\x05\x06"                 # zip end-of-central-directory record: 22 bytes, then the comment
# Config keys that fix the model's parameters and the task: a checkpoint whose config differs in
# one of them belongs to another run (dotted prefixes: every model.* key).
FIT_KEYS = ("model.", "data.name", "data.task", "data.target", "data.tokenizer", "data.vocab_size",
            "data.image_size", "loss.name", "optim.name", "train.dtype")


def save(path: Path, state: dict[str, Any]) -> None:
    """torch.save to memory, add the digest, then one atomic rename: a kill mid-save leaves the previous
    file whole, and the digest always belongs to the bytes beside it.

    `state` holds only tensors, numbers, strings, lists and dicts, so loading needs no pickled code.
    """
    buffer = io.BytesIO()
    torch.save({**state, "trainlab_format": FORMAT}, buffer)
    atomic_write_bytes(path, _with_digest(buffer.getvalue()))


def _with_digest(raw: bytes) -> bytes:
    """torch.save's zip with sha256(raw) as its archive comment (torch writes an empty one)."""
    if raw[-22:-18] != _EOCD or raw[-2:] != b"\0\0":
        raise RuntimeError("torch.save wrote a zip this trainlab does not know how to sign")
    comment = _PREFIX + hashlib.sha256(raw).hexdigest().encode()
    return raw[:-2] + struct.pack("<H", len(comment)) + comment


def _split_digest(data: bytes) -> tuple[bytes, Optional[str]]:
    """(the bytes torch.save wrote, the digest saved with them); (data, None) when it has none."""
    n = _COMMENT
    if len(data) < 22 + n or not data[-n:].startswith(_PREFIX) or data[-n - 22:-n - 18] != _EOCD \
            or data[-n - 2:-n] != struct.pack("<H", n):
        return data, None
    return data[:-n - 2] + b"\0\0", data[-64:].decode("ascii", "replace")


def load(path: Path, map_location: Optional[str | torch.device] = "cpu", *, config: Any = None,
         resumable: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, verified: its digest, its format, and that it is trainlab's.

    Loaded with weights_only=True: a checkpoint can never execute code when it is loaded. `config` (a
    Config or its dict): the checkpoint must come from a run of that config (FIT_KEYS agree);
    `resumable`: it must hold what --resume needs. Any mismatch is a DataError (exit 3) naming the file
    and what does not match. A checkpoint without a digest (trainlab before checkpoint format 1) loads
    with a warning.

    >>> state = load(Path("runs/seed_mlp-20261128-171500/checkpoints/last.pt"))
    >>> state["progress"]["epoch"], state["code_version"]
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Checkpoint '{path}' does not exist: the run has not finished an epoch or "
                          "saved on Ctrl-C. Train it first, or point to another run directory.")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"Checkpoint '{path}' cannot be read ({e.strerror or e}).") from None
    raw, digest = _split_digest(data)
    if digest is not None and hashlib.sha256(raw).hexdigest() != digest:
        raise DataError(f"Checkpoint '{path}' was changed after it was written: its bytes no longer match the "
                        "SHA-256 digest saved with them (a damaged disk or copy, or an edit). Nothing was loaded "
                        "from it. Restore it from a copy, or train the run again.")
    try:
        state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 — any parse failure of untrusted bytes is the same answer
        raise DataError(f"Checkpoint '{path}' cannot be read safely ({_reason(e)}). It is truncated, corrupt, "
                        "not a checkpoint, or holds objects other than tensors and plain values; nothing "
                        "from it was executed.") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise DataError(f"Checkpoint '{path}' is not a trainlab checkpoint: it holds no model weights "
                        f"(a {type(state).__name__}{' without a model entry' if isinstance(state, dict) else ''}).")
    version = state.get("trainlab_format")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise DataError(f"Checkpoint '{path}' is not a trainlab checkpoint: its format number is {version!r}.")
    if version is not None and version > FORMAT:
        raise DataError(f"Checkpoint '{path}' was written by a newer trainlab ({state.get('code_version', '?')}, "
                        f"checkpoint format {version}); this one reads format {FORMAT} at most. Upgrade trainlab "
                        "to load it.")
    if digest is None:
        if version is not None:  # trainlab's own file, but its digest is gone: damaged at its end
            raise DataError(f"Checkpoint '{path}' was changed after it was written: the SHA-256 digest saved at "
                            "its end is missing or damaged, so its bytes cannot be trusted. Restore it from a "
                            "copy, or train the run again.")
        warnings.warn(f"Checkpoint '{path}' has no digest (written by a trainlab before checkpoint format 1): "
                      "it cannot be verified and is loaded as it is.", stacklevel=2)
    if config is not None:
        _check_fits(path, state, config)
    if resumable:
        missing = [k for k in ("progress", "optimizer", "rng") if k not in state]
        if state.get("resumable") is False or missing:
            raise DataError(f"Checkpoint '{path}' cannot be resumed: it holds final weights only (written "
                            f"when the run ended{', e.g. by packed training' if state.get('resumable') is False else ''}"
                            f"; missing {', '.join(missing) or 'the training state'}). Train a new run instead.")
    return state


def _reason(e: Exception) -> str:
    """One readable line of torch.load's error: what it refused, not its advice to load unsafely."""
    text = str(e)
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return f"it asks to run code: {line.strip().removeprefix('WeightsUnpickler error: ')}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {}
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _check_fits(path: Path, state: dict, config: Any) -> None:
    """Refuse a checkpoint of another model or task than `config`'s, naming the keys that differ."""
    theirs = _flatten(state.get("config"))
    if not theirs:
        return  # no config saved with it: load_state_dict still checks every tensor's name and shape
    ours = _flatten(config.to_dict() if hasattr(config, "to_dict") else config)
    fit = [k for k in ours if any(k == f or (f.endswith(".") and k.startswith(f)) for f in FIT_KEYS)]
    differ = [k for k in fit if k in theirs and _plain(theirs[k]) != _plain(ours[k])]
    if differ:
        shown = "; ".join(f"{k} is {theirs[k]!r} in the checkpoint, {ours[k]!r} in the config" for k in differ[:5])
        raise DataError(f"Checkpoint '{path}' belongs to another model or task than this run's config: {shown}"
                        f"{' (and more)' if len(differ) > 5 else ''}. Point to the checkpoint of this run, or "
                        "train a new one.")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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


# The prefix of a `trainlab pretrain` checkpoint's weights: its model is the classifier (as
# "backbone") inside the objective's module, beside a projection head or a decoder.
ENCODER_PREFIX = "backbone."


def holds_encoder(model_state: dict) -> bool:
    """Whether a checkpoint's model state is a pre-training run's (the encoder in its objective's module)."""
    return any(k.startswith(ENCODER_PREFIX) for k in model_state)


def load_weights(model: torch.nn.Module, path: Path, config: Any = None) -> dict[str, Any]:
    """Put a checkpoint's model weights into `model`; returns the whole checkpoint.

    A checkpoint of another shape is a DataError naming the parameters that do not fit.
    """
    state = load(path, config=config)
    if holds_encoder(state.get("model") or {}) and not holds_encoder(model.state_dict()):
        raise ConfigError(f"Checkpoint '{path}' holds an encoder that `trainlab pretrain` learned without labels, "
                          "not a model that predicts. Train one from it: trainlab train -c CONFIG "
                          f"model.init_from={Path(path).parent.parent}")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        details = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        shown = "; ".join(d[:240] for d in details[:3]) or str(e).splitlines()[0]
        raise DataError(f"Checkpoint '{path}' does not fit this model ({shown}). It was saved by another "
                        "model or task: point to this run's checkpoint.") from None
    return state
