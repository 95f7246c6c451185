"""--format saved_model: the exported computation (graph.Exportable) rebuilt in TensorFlow, as a SavedModel folder.

The network is the run's Keras twin (keras_backend.build_network, holding the checkpoint's
weights; mlp, cnn and resnet have one, for runs of either backend); the normalisation in front and the
probabilities behind repeat Exportable's arithmetic with its very constants. The folder holds one
signature, `serving_default`: raw inputs in (graph.input_spec), what predict gives out. A consumer
loads it with tf.saved_model.load(folder) (or TensorFlow Serving) without trainlab or Keras.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .graph import Exportable

METADATA_DIR = "assets.extra"  # TensorFlow's place for files a SavedModel carries and its loader ignores


def check_model(model_name: str) -> None:
    from ..keras_backend import MODELS
    if model_name not in MODELS:
        raise ConfigError(f"--format saved_model rebuilds the network in Keras, which trainlab can do for model.name "
                          f"{', '.join(MODELS)}, not model.name={model_name}. Use --format onnx (TensorFlow "
                          "reads ONNX through onnx-tf), pt2 or torchscript.")


def write(module: Exportable, cfg, input_shape: tuple[int, ...], raw_dtype: torch.dtype, names: tuple[str, str],
          metadata_json: str) -> Path:
    """The SavedModel in a new temporary folder (the caller verifies it, then moves it into place)."""
    from ..keras_backend import build_network, import_keras
    import_keras()  # TensorFlow loaded quietly, with the backend's settings (oneDNN off)
    import tensorflow as tf
    network = build_network(cfg, module.model, input_shape, module.loss_name, module.task)
    keras_model, dtype = network.keras_model, module.dtype
    tf_dtype = tf.as_dtype(str(dtype).removeprefix("torch."))
    consts = {name: tf.constant(getattr(module, name).numpy()) for name in ("mul", "add", "mean", "scale")
              if hasattr(module, name)}
    kind, task, loss_name = module.kind, module.task, module.loss_name
    target = (module.target_mean, module.target_std) if task == "regression" else None

    class Served(tf.Module):
        def __init__(self):
            super().__init__()
            self.keras_model = keras_model  # tracked: its variables are saved with the function

        @tf.function(input_signature=[tf.TensorSpec((None, *input_shape),
                                                    tf.as_dtype(str(raw_dtype).removeprefix("torch.")), name=names[0])])
        def serve(self, x):
            if kind == "image":
                x = tf.cast(x, tf_dtype) * consts["mul"] + consts["add"]                   # (N, C, H, W)
            else:  # table: StandardScaler's arithmetic in float64, rounded as the splits hold it
                x = tf.cast(tf.cast((tf.cast(x, tf.float64) - consts["mean"]) / consts["scale"], tf.float32), tf_dtype)
            z = tf.cast(self.keras_model(x, training=False), tf.float64)                  # (N, K) or (N, 1)
            if task == "regression":
                out = z[:, 0] * target[1] + target[0]
            elif loss_name == "bce_with_logits":
                p = tf.sigmoid(z[:, 0])
                out = tf.stack([1 - p, p], axis=1)
            else:
                out = tf.nn.softmax(z, axis=1)
            return {names[1]: out}

    served = Served()
    folder = Path(tempfile.mkdtemp(prefix="trainlab-saved-model-"))
    try:
        tf.saved_model.save(served, str(folder / "model"), signatures={"serving_default": served.serve})
        (folder / "model" / METADATA_DIR).mkdir(exist_ok=True)
        (folder / "model" / METADATA_DIR / "trainlab.json").write_text(metadata_json)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder / "model"


def load(folder: Path):
    """The folder loaded as a consumer loads it: tf.saved_model.load and its serving signature."""
    from ..keras_backend import import_keras
    import_keras()
    import tensorflow as tf
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = serve(tf.constant(x.numpy())).values()
        return torch.from_numpy(np.asarray(out.numpy()))

    return run


def discard(staged: Path) -> None:
    shutil.rmtree(staged.parent, ignore_errors=True)


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def put(staged: Path, target: Path) -> None:
    """Move the verified folder to `target`, replacing a SavedModel an earlier export left there.

    A folder cannot be swapped in one rename: the old one is renamed aside first, so a kill
    between the two renames leaves target missing (never half-written) and the old one beside it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if not (target / "saved_model.pb").is_file():
            raise ConfigError(f"--out '{target}' exists and is not a SavedModel folder; give a new path.")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    shutil.move(str(staged), str(target))
    shutil.rmtree(old, ignore_errors=True)
    discard(staged)
