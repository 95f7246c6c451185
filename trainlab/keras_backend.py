"""train.backend=keras: the torch model's network rebuilt in Keras 3 (TensorFlow), trained by train()'s own loop.

What Keras does here is the arithmetic of a step: the forward pass, the loss, the gradients
(tf.GradientTape) and the optimiser's update (keras.optimizers). Everything around it is trainlab's
loop, unchanged: the same splits and batches (order, augmentation), the lr schedule (torch's
lr_scheduler, driving the lr variable of the Keras optimiser), the metrics of every row, early
stopping, checkpoints, Ctrl-C and resume. Three adapters make that possible:

- KerasNetwork is an nn.Module to the loop: forward() takes and returns torch tensors, and its
  state_dict() holds the Keras weights under the torch model's names and layouts, so best.pt and
  last.pt of a keras run load into the torch model of the same config (evaluate, predict, export and
  explain read them as they read any run) and the Keras model starts from the torch model's initial
  weights at the same seed: a comparison of backends compares the frameworks' arithmetic, not two
  draws of initial weights.
- KerasOptimizer is a torch.optim.Optimizer to the loop: its param_groups hold the lr that torch's
  schedulers set (on one placeholder parameter), and its state_dict() the Keras optimiser's variables.
- train_step has train.train_step's signature and calls the compiled Keras step.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .config import Config
from .errors import ConfigError
from .models import ACTIVATION_LAYERS
from .runs import atomic_write_bytes

MODELS = ("mlp", "cnn", "resnet")  # the built-in models whose every layer has a Keras twin below


def import_keras():
    """keras, on the TensorFlow backend (the seed's framework, §5.2) unless KERAS_BACKEND names another."""
    chosen = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if chosen != "tensorflow":  # read by keras when it is first imported: checked before that
        raise ConfigError(f"train.backend=keras trains through Keras' TensorFlow backend, but KERAS_BACKEND="
                          f"{chosen}. Unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow "
                          "(or use train.backend=torch).")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow's oneDNN kernels off unless the user asks for them, so that a keras run computes
    # with the Eigen kernels that docs/keras.md measured on every x86 CPU. (The 0.017 first blamed
    # on oneDNN was a ReLU crossing, which torch's own kernels also produce: docs/keras.md.)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        with _quiet_stderr():
            import keras
    except ImportError as e:
        raise ConfigError(f"train.backend=keras needs Keras 3 on TensorFlow, which is not installed ({e}). "
                          "Install them with: pip install 'trainlab[keras]'") from None
    if keras.backend.backend() != "tensorflow":  # keras was imported earlier with another backend
        raise ConfigError(f"train.backend=keras trains through Keras' TensorFlow backend, but keras was loaded on "
                          f"{keras.backend.backend()} in this process. Set KERAS_BACKEND=tensorflow.")
    return keras


@contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null while TensorFlow loads: its C++ logging prints start-up lines
    ("All log messages before absl::InitializeLog()...", oneDNN's notice) that TF_CPP_MIN_LOG_LEVEL
    no longer silences (TensorFlow 2.21). A failed import still raises, with its message."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check(cfg: Config, distributed: bool, custom: bool) -> None:
    """A ConfigError (exit 2) naming the first key Keras cannot do as the torch backend does."""
    def refuse(key: str, why: str) -> None:
        raise ConfigError(f"{key}: {why} under train.backend=keras. Change it, or use train.backend=torch.")

    if custom:
        refuse("train(model=, loss_fn=, step_fn=)", "torch objects passed to train() cannot be trained")
    if cfg.model.name not in MODELS:
        refuse(f"model.name={cfg.model.name}", f"trainlab has no Keras twin of it (only of {', '.join(MODELS)})")
    if cfg.model.init_from or cfg.model.freeze:
        refuse("model.init_from", "a `trainlab pretrain` encoder cannot be loaded")
    if cfg.loss.label_smoothing:
        refuse("loss.label_smoothing", "Keras' sparse cross-entropy has no label smoothing")
    if cfg.optim.weight_decay and cfg.optim.name != "adamw":
        refuse(f"optim.weight_decay with optim.name={cfg.optim.name}",
               "torch's coupled L2 on every parameter has no Keras optimiser (Keras' weight_decay is "
               "decoupled). Use regularize.l2 (for sgd the same update on weight matrices) or optim.name=adamw")
    if cfg.train.accumulate > 1:
        refuse("train.accumulate", "gradient accumulation is not available")
    if cfg.train.compile:
        refuse("train.compile", "torch.compile does not apply (the Keras step is a tf.function already)")
    if cfg.train.precision == "bf16":
        refuse("train.precision=bf16", "bf16 autocast is not available")
    if cfg.train.device == "cuda":
        refuse("train.device=cuda", "trainlab[keras] installs TensorFlow's CPU build")
    if distributed:
        refuse("trainlab train --nproc", "several processes are not available")


# ---------------------------------------------------------------- the network

class KerasNetwork(nn.Module):
    """A keras.Model built layer by layer from the torch model, with its weights (see the module's docstring).

    `links`: (torch state_dict name, Keras variable, torch shape) for every tensor of the torch
    model; `seeds`: the dropout layers' SeedGenerator state variables (the RNG resume restores).
    """

    def __init__(self, keras_model, links: list[tuple[str, Any, tuple[int, ...]]], seeds: list, loss_name: str,
                 task: str, twin: nn.Module):
        super().__init__()
        import tensorflow as tf
        self.keras_model = keras_model
        self.__dict__["_twin"] = twin  # not a submodule: the loop must see no torch parameters
        self.links, self.seeds = links, seeds
        self.loss_name, self.task = loss_name, task
        dtype = keras_model.inputs[0].dtype
        signature = [tf.TensorSpec((None, *keras_model.inputs[0].shape[1:]), dtype)]
        self._forward = tf.function(lambda x: keras_model(x, training=False), input_signature=signature,
                                    reduce_retracing=True)
        self._step = None  # the compiled training step, made on the first call with the optimiser

    def torch_twin(self) -> nn.Module:
        """The torch model of the same config, holding this network's current weights (trainlab check
        describes its layers)."""
        self._twin.load_state_dict(self.state_dict())
        return self._twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._forward(x.numpy()).numpy())  # (B, *input_shape) -> (B, outputs)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return {name: _to_torch(variable.numpy(), shape) for name, variable, shape in self.links}

    def load_state_dict(self, state: dict, strict: bool = True, assign: bool = False):
        names = [name for name, _, _ in self.links]
        missing, unexpected = set(names) - set(state), set(state) - set(names)
        wrong = [f"{n}: {tuple(state[n].shape)} for {shape}" for n, _, shape in self.links
                 if n in state and tuple(state[n].shape) != shape]
        if missing or unexpected or wrong:
            raise RuntimeError("Error(s) in loading state_dict for KerasNetwork:\n"
                               f"\tmissing: {sorted(missing)}\n\tunexpected: {sorted(unexpected)}\n\tshapes: {wrong}")
        for name, variable, shape in self.links:
            variable.assign(_from_torch(state[name], tuple(variable.shape), variable.dtype))

    def train_on(self, x: torch.Tensor, y: torch.Tensor,
                 optimizer: "KerasOptimizer") -> tuple[torch.Tensor, torch.Tensor]:
        """One Keras optimiser step on the batch (x, y): (mean loss without the L1/L2 penalty, output)."""
        if self._step is None:
            self._step = _compile_step(self, optimizer.keras)
        optimizer.set_keras_lr()
        loss, output = self._step(x.numpy(), y.numpy())
        optimizer._opt_called = True  # what an lr scheduler's wrapper of step() records (see optim._fused_sgd_step)
        return torch.from_numpy(np.asarray(loss.numpy())), torch.from_numpy(output.numpy())

    def save_native(self, path: Path) -> None:
        """The model in Keras' own `.keras` format at `path`, atomically (keras.saving.load_model reads it)."""
        keras = import_keras()
        with tempfile.TemporaryDirectory() as scratch:  # Keras writes only to a path named *.keras
            keras.saving.save_model(self.keras_model, Path(scratch) / "model.keras")
            content = (Path(scratch) / "model.keras").read_bytes()
        atomic_write_bytes(path, content)  # one rename; a full disk is DiskFull as for last.pt


def _to_torch(value: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """A Keras weight in torch's layout: Dense kernels (in, out) -> (out, in); Conv2D kernels
    (kh, kw, in, out) -> (out, in, kh, kw)."""
    if value.ndim == 2:
        value = value.T
    elif value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(value)).reshape(shape)


def _from_torch(tensor: torch.Tensor, keras_shape: tuple[int, ...], dtype) -> np.ndarray:
    value = tensor.detach().cpu().numpy()
    if value.ndim == 2:
        value = value.T
    elif value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    return np.ascontiguousarray(value).reshape(keras_shape).astype(dtype)


def build_network(cfg: Config, twin: nn.Module, input_shape: tuple[int, ...], loss_name: str,
                  task: str) -> KerasNetwork:
    """The Keras twin of `twin` (what models.build_model made: mlp, cnn, resnet), holding twin's weights.

    Images stay (N, C, H, W) at the input, as trainlab's batches are; the convolutions run
    channels-last (TensorFlow's CPU kernels' layout) between a Permute in and a Permute back before
    Flatten, so the flattened features, and with them the first Dense kernel, are in torch's order.
    """
    keras = import_keras()
    # Keras makes the optimiser's lr variable and its Python-float hyper-parameters (momentum, betas)
    # tensors of floatx: left at float32 they round a float64 run's lr and momentum to float32 (0.9
    # becomes 0.9 - 2.4e-8, enough to move one epoch's weights 4e-8 from torch's float64 run).
    keras.config.set_floatx(cfg.train.dtype)
    inputs = keras.Input(shape=input_shape, dtype=cfg.train.dtype)
    builder = _Twin(cfg, keras)
    model = keras.Model(inputs, builder.call(twin, "", inputs))
    twin_state = twin.state_dict()
    links = [(name, variable, tuple(twin_state[name].shape)) for name, variable in builder.links]
    for name, tensor in twin_state.items():
        if name.endswith("num_batches_tracked"):  # a counter torch keeps and Keras does not: saved as 0
            links.append((name, _Zero(), ()))
    network = KerasNetwork(model, links, [g.state for layer in model.layers
                                          for g in getattr(layer, "_seed_generators", [])], loss_name, task, twin)
    network.load_state_dict(twin_state)
    return network


class _Twin:
    """Calls the Keras layer of each torch module on a Keras tensor (the functional API), in the
    torch model's own order; `links` collects (torch state_dict name, Keras variable)."""

    def __init__(self, cfg: Config, keras):
        self.cfg, self.L, self.dtype = cfg, keras.layers, cfg.train.dtype
        self.links: list[tuple[str, Any]] = []
        self.channels_last, self.dropouts = False, 0
        self.regularizer = None
        if cfg.regularize.l1 or cfg.regularize.l2:
            # trainlab's penalty is l1*sum|w| + l2/2*sum w^2 (train.make_penalty); Keras' L1L2 is l1*sum|w| + l2*sum w^2.
            self.regularizer = keras.regularizers.L1L2(l1=cfg.regularize.l1, l2=cfg.regularize.l2 / 2)

    def call(self, module: nn.Module, name: str, x):
        from .models import BasicBlock, ResNet
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential):
            for index, child in enumerate(module):
                x = self.call(child, f"{prefix}{index}", x)
            return x
        if isinstance(module, ResNet):
            for part in ("stem", "stages", "pool", "dropout", "fc"):
                x = self.call(getattr(module, part), f"{prefix}{part}", x)
            return x
        if isinstance(module, BasicBlock):  # act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))
            out = x
            for part in ("conv1", "bn1", "act", "conv2", "bn2"):
                out = self.call(getattr(module, part), f"{prefix}{part}", out)
            added = self.L.Add(dtype=self.dtype)([out, self.call(module.shortcut, f"{prefix}shortcut", x)])
            return self.call(module.act, f"{prefix}act", added)
        if isinstance(module, nn.Identity):
            return x
        return self._leaf(module, name, x)

    def _leaf(self, module: nn.Module, name: str, x):
        L, dtype = self.L, self.dtype
        if isinstance(module, nn.Flatten):
            if self.channels_last:
                x = L.Permute((3, 1, 2), dtype=dtype)(x)  # (H, W, C) -> (C, H, W)
                self.channels_last = False
            return L.Flatten(dtype=dtype)(x)
        if isinstance(module, nn.Linear):
            return self._linked(L.Dense(module.out_features, kernel_regularizer=self.regularizer, dtype=dtype),
                                name, ("weight", "bias"), x)
        if isinstance(module, nn.Conv2d):
            if not self.channels_last:
                x = L.Permute((2, 3, 1), dtype=dtype)(x)  # (C, H, W) -> (H, W, C)
                self.channels_last = True
            if module.padding != (0, 0):  # torch pads both sides, then strides from the top left
                x = L.ZeroPadding2D(module.padding, dtype=dtype)(x)
            conv = L.Conv2D(module.out_channels, module.kernel_size, strides=module.stride,
                            use_bias=module.bias is not None, kernel_regularizer=self.regularizer, dtype=dtype)
            return self._linked(conv, name, ("weight", "bias") if module.bias is not None else ("weight",), x)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            # torch's momentum 0.1 is Keras' 0.9 (the weight of the old running value); Keras' default
            # epsilon is 1e-3. torch keeps the unbiased batch variance in running_var, Keras the biased one.
            norm = L.BatchNormalization(axis=-1, momentum=1 - module.momentum, epsilon=module.eps, dtype=dtype)
            return self._linked(norm, name, ("weight", "bias", "running_mean", "running_var"), x)
        if isinstance(module, nn.MaxPool2d):
            return L.MaxPooling2D(module.kernel_size, dtype=dtype)(x)
        if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
            return L.GlobalAveragePooling2D(keepdims=True, dtype=dtype)(x)  # (H, W, C) -> (1, 1, C)
        if isinstance(module, nn.Dropout):
            self.dropouts += 1
            return L.Dropout(module.p, seed=self.cfg.train.seed * 1000 + self.dropouts, dtype=dtype)(x)
        if isinstance(module, nn.LeakyReLU):
            return L.LeakyReLU(negative_slope=module.negative_slope, dtype=dtype)(x)  # Keras' default is 0.2
        if type(module) in _ACTIVATIONS:
            return L.Activation(_ACTIVATIONS[type(module)], dtype=dtype)(x)
        raise ConfigError(f"model.name={self.cfg.model.name}: the layer {name} ({type(module).__name__}) has no "
                          "Keras twin in trainlab; use train.backend=torch.")

    def _linked(self, layer, name: str, tensors: tuple[str, ...], x):
        out = layer(x)  # builds the layer's variables
        self.links += [(f"{name}.{t}", v) for t, v in zip(tensors, _layer_variables(layer))]
        return out


def _layer_variables(layer) -> list:
    if hasattr(layer, "moving_mean"):  # BatchNormalization: gamma, beta, moving mean, moving variance
        return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
    return [layer.kernel, layer.bias]


class _Zero:
    """Stands for torch's num_batches_tracked in a link: reads as 0, ignores what is assigned."""

    shape, dtype = (), "int64"

    def numpy(self) -> np.ndarray:
        return np.zeros((), dtype=np.int64)

    def assign(self, value) -> None:
        pass


# model.activation's torch layers by the name Keras knows them by too (GELU: exact erf in both);
# LeakyReLU is built above, with torch's slope.
_ACTIVATIONS = {layer: name for name, layer in ACTIVATION_LAYERS.items() if name != "leaky_relu"}


# ---------------------------------------------------------------- the optimiser

class KerasOptimizer(torch.optim.Optimizer):
    """The Keras optimiser behind a torch.optim.Optimizer's param_groups (see the module's docstring).

    step() is never called: KerasNetwork.train_on applies the update. state_dict() holds the Keras
    optimiser's variables (moments, iteration count) and the dropout layers' RNG states, which
    resume restores with it (they are not weights of the torch model, so not in the model's state).
    """

    def __init__(self, keras_optimizer, lr: float, network: KerasNetwork):
        super().__init__([torch.zeros(1, requires_grad=True)], {"lr": lr})  # the placeholder the lr lives on
        self.keras, self.network = keras_optimizer, network
        self._keras_lr: Optional[float] = None
        keras_optimizer.build(network.keras_model.trainable_variables)

    def step(self, closure=None):
        raise RuntimeError("train.backend=keras: the Keras optimiser steps inside KerasNetwork.train_on")

    def set_keras_lr(self) -> None:
        lr = float(self.param_groups[0]["lr"])
        if lr != self._keras_lr:  # assigned only when the schedule moved it (a TensorFlow op each time)
            self.keras.learning_rate.assign(lr)
            self._keras_lr = lr

    def state_dict(self) -> dict:
        return {"state": {}, "param_groups": [{k: v for k, v in g.items() if k != "params"} | {"params": [0]}
                                              for g in self.param_groups],
                "keras_variables": [torch.from_numpy(np.array(v.numpy())) for v in self.keras.variables],
                "keras_rng": [torch.from_numpy(np.array(s.numpy())) for s in self.network.seeds]}

    def load_state_dict(self, state: dict) -> None:
        for group, saved in zip(self.param_groups, state["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})
        for variable, value in zip(self.keras.variables, state["keras_variables"]):
            variable.assign(value.numpy())
        for variable, value in zip(self.network.seeds, state["keras_rng"]):
            variable.assign(value.numpy())
        self._keras_lr = None


def build_optimizer(cfg: Config, network: KerasNetwork) -> KerasOptimizer:
    """optim.* as a keras.optimizers instance with torch.optim's defaults where Keras' differ
    (docs/keras.md lists each, and the formulas that still differ)."""
    keras = import_keras()
    o = cfg.optim
    # The hyper-parameters as numpy float64: Keras casts each with tf.cast, which makes a Python float
    # a float32 tensor first (0.9 -> 0.9 - 2.4e-8), moving a float64 run's update off torch's.
    f = np.float64
    clip = {"global_clipnorm": f(cfg.train.clip_grad_norm)} if cfg.train.clip_grad_norm else {}
    betas = {"beta_1": f(o.betas[0]), "beta_2": f(o.betas[1])}
    if o.name in ("gd", "sgd", "momentum"):
        momentum = o.momentum if o.momentum is not None else (0.9 if o.name == "momentum" else 0.0)
        made = keras.optimizers.SGD(o.lr, momentum=f(momentum), nesterov=o.nesterov and momentum > 0, **clip)
    elif o.name == "adagrad":  # torch starts the accumulator at 0 (Keras at 0.1), eps 1e-10 (Keras 1e-7)
        made = keras.optimizers.Adagrad(o.lr, initial_accumulator_value=f(0.0), epsilon=f(o.eps or 1e-10), **clip)
    elif o.name == "rmsprop":  # torch's alpha is Keras' rho (Keras' default 0.9, torch's 0.99); eps 1e-8
        made = keras.optimizers.RMSprop(o.lr, rho=f(o.alpha), momentum=f(o.momentum or 0.0),
                                        epsilon=f(o.eps or 1e-8), **clip)
    elif o.name == "adam":  # eps 1e-8 (Keras 1e-7)
        made = keras.optimizers.Adam(o.lr, epsilon=f(o.eps or 1e-8), **betas, **clip)
    else:  # adamw: torch's default decay 0.01 (Keras 0.004)
        decay = o.weight_decay if o.weight_decay is not None else 0.01
        made = keras.optimizers.AdamW(o.lr, weight_decay=f(decay), epsilon=f(o.eps or 1e-8), **betas, **clip)
    return KerasOptimizer(made, o.lr, network)


# ---------------------------------------------------------------- the step

def _keras_loss(loss_name: str, task: str):
    """loss(y, output) -> the batch's mean, as losses.build_loss computes it in torch."""
    import tensorflow as tf
    keras = import_keras()
    ops = keras.ops
    if loss_name == "cross_entropy":
        return lambda y, out: ops.mean(keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True))
    if loss_name == "bce_with_logits":
        return lambda y, out: ops.mean(keras.losses.binary_crossentropy(ops.cast(y, out.dtype), out[:, 0],
                                                                        from_logits=True))
    if task == "regression":
        return lambda y, out: ops.mean(ops.square(out[:, 0] - y))
    # MSE on a classification set: softmax probabilities against one-hot targets (the seed's MSE).
    return lambda y, out: ops.mean(ops.square(ops.softmax(out, axis=1) - tf.one_hot(y, out.shape[1], dtype=out.dtype)))


def _compile_step(network: KerasNetwork, optimizer) -> Any:
    """The training step as one tf.function: forward, loss (+ the layers' L1/L2 penalties), gradients, update."""
    import tensorflow as tf
    model, loss_fn = network.keras_model, _keras_loss(network.loss_name, network.task)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            output = model(x, training=True)                  # (B, outputs)
            loss = loss_fn(y, output)                         # the batch's mean
            objective = loss + tf.add_n(model.losses) if model.losses else loss
        optimizer.apply(tape.gradient(objective, variables), variables)
        return loss, output

    return step


def train_step(model: KerasNetwork, batch: tuple[torch.Tensor, torch.Tensor], loss_fn, optimizer: KerasOptimizer,
               penalty=None, clip_grad_norm: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """train.train_step for a keras run: (loss, output) of one step, both torch tensors.

    loss_fn, penalty and clip_grad_norm are the Keras model's own (its loss, kernel regularizers and
    the optimiser's global_clipnorm), made from the same config."""
    x, y = batch
    return model.train_on(x, y, optimizer)


def versions() -> str:
    import tensorflow as tf
    keras = import_keras()
    return f"keras {keras.__version__}, tensorflow {tf.__version__}"


def set_threads(threads: Optional[int]) -> None:
    """train.threads for TensorFlow's thread pools (only before TensorFlow's first operation)."""
    if not threads:
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(math.ceil(threads / 2))
    except RuntimeError:  # TensorFlow already started in this process (train() called twice): its pools stay
        pass
