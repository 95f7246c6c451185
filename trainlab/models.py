"""Model registry: turns a ModelConfig and the data's shapes into an nn.Module; knows nothing about training."""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from typing import Callable, Optional

import torch
from torch import nn

from .config import ModelConfig
from .errors import ConfigError

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Build the model named by cfg.name for examples of `input_shape` and `num_outputs` outputs.

    input_shape is one example's shape: (C, H, W) for images, (F,) for tabular data.
    The model maps a float batch (N, *input_shape) to (N, num_outputs).

    >>> model = build_model(ModelConfig(name="mlp", hidden=[128]), (1, 28, 28), 10)
    >>> count_parameters(model)
    101770
    """
    input_shape = tuple(int(d) for d in input_shape)
    if num_outputs < 1:
        raise ConfigError(f"model.name={cfg.name}: num_outputs must be >= 1, got {num_outputs}.")
    builder = BUILDERS.get(cfg.name, _build_custom)
    return builder(cfg, input_shape, num_outputs)


def _activation(name: str) -> nn.Module:
    return ACTIVATION_LAYERS[name]()


# ---------------------------------------------------------------- mlp

def _build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    # Layers are created in forward order so that, after torch.manual_seed(s), the initial
    # weights equal those of the same nn.Sequential written by hand (the parity test relies on it).
    layers: list[nn.Module] = [nn.Flatten()]  # (N, *input_shape) -> (N, F)
    width_in = math.prod(input_shape)
    for width in cfg.hidden:
        layers.append(nn.Linear(width_in, width))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(_activation(cfg.activation))
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width_in = width
    layers.append(nn.Linear(width_in, num_outputs))  # hidden=[] gives linear/logistic regression
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- cnn

def _image_shape(cfg: ModelConfig, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.name={cfg.name} needs image examples of shape (C, H, W), but the data gives "
            f"examples of shape {input_shape}. Use model.name=mlp for tabular data, or choose an "
            "image dataset.")
    return input_shape  # type: ignore[return-value]


def _build_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """LeNet-5 style: two 5x5 convs with 2x2 max-pooling, then fully connected 120 -> 84 -> out."""
    channels_in, height, width = _image_shape(cfg, input_shape)
    if len(cfg.channels) != 2:
        raise ConfigError(
            f"model.channels={cfg.channels} must list exactly two widths for model.name=cnn "
            "(one per conv layer), e.g. [6, 16] for LeNet-5.")
    # conv1 keeps H, W (padding 2); pool halves them. conv2 has no padding (LeNet: 14 -> 10),
    # unless that would leave < 2 pixels for the second pool (small inputs such as 8x8 digits).
    pooled_h, pooled_w = height // 2, width // 2
    conv2_padding = 0 if min(pooled_h, pooled_w) - 4 >= 2 else 2
    out_h = (pooled_h + 2 * conv2_padding - 4) // 2
    out_w = (pooled_w + 2 * conv2_padding - 4) // 2
    if out_h < 1 or out_w < 1:
        raise ConfigError(
            f"model.name=cnn needs images of at least 4x4 pixels, but the data gives {height}x{width}. "
            "Use model.name=mlp for such small inputs.")
    c1, c2 = cfg.channels

    def conv_block(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
        norm = [nn.BatchNorm2d(c_out)] if cfg.batch_norm else []
        return [nn.Conv2d(c_in, c_out, 5, padding=padding), *norm, _activation(cfg.activation), nn.MaxPool2d(2)]

    def dense_block(f_in: int, f_out: int) -> list[nn.Module]:
        drop = [nn.Dropout(cfg.dropout)] if cfg.dropout > 0 else []
        return [nn.Linear(f_in, f_out), _activation(cfg.activation), *drop]

    return nn.Sequential(
        *conv_block(channels_in, c1, padding=2),      # (N, c1, H/2, W/2)
        *conv_block(c1, c2, padding=conv2_padding),   # (N, c2, out_h, out_w)
        nn.Flatten(),                                 # (N, c2 * out_h * out_w)
        *dense_block(c2 * out_h * out_w, 120),
        *dense_block(120, 84),
        nn.Linear(84, num_outputs),
    )


# ---------------------------------------------------------------- resnet

class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; a 1x1 conv-BN projection when the shape changes."""

    def __init__(self, channels_in: int, channels_out: int, stride: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.act = _activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels_out:  # option B of He et al. 2016
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, section 4.2): 6n+2 layers in 3 stages of n basic blocks.

    BatchNorm is part of the architecture, so model.batch_norm does not apply; model.dropout,
    when > 0, is applied to the pooled features before the final linear layer.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_outputs: int, depth: int = 20,
                 width: int = 16, activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            _activation(activation))
        stages = []
        channels_in = width
        for stage, channels_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1  # halves H, W at stages 2 and 3
                stages.append(BasicBlock(channels_in, channels_out, stride, activation))
                channels_in = channels_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, 4*width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels_in, num_outputs)
        for module in self.modules():  # He init, as in the paper (torchvision does the same)
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) -> (N, width, H, W) -> (N, 4*width, H/4, W/4) -> pooled (N, 4*width)
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.encode(x)))  # (N, num_outputs)


def _build_resnet(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    shape = _image_shape(cfg, input_shape)
    return ResNet(shape, num_outputs, depth=cfg.depth, width=cfg.width,
                  activation=cfg.activation, dropout=cfg.dropout)


# ---------------------------------------------------------------- custom "package.module:Class"

def _build_custom(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    where = f"model.name='{cfg.name}'"
    module_name, _, class_path = cfg.name.partition(":")
    if not module_name or not class_path:
        raise ConfigError(
            f"{where} is not a built-in model ({', '.join(BUILDERS)}) and does not look like "
            "'package.module:Class'. Give the module path, a colon, then the class name.")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or any error raised while the module runs
        raise ConfigError(
            f"{where}: cannot import module '{module_name}' ({type(e).__name__}: {e}). Make sure the "
            "package is installed or its folder is on PYTHONPATH (e.g. run from the folder that "
            "holds it, or `export PYTHONPATH=/path/to/project`), and that the module imports "
            "without errors.") from None
    model_class = module
    for attribute in class_path.split("."):  # "mod:Outer.Inner" is allowed
        model_class = getattr(model_class, attribute, None)
        if model_class is None:
            # Suggest the module's own nn.Module classes, closest spelling first (at most 5).
            defined = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__ and not n.startswith("_")]
            close = difflib.get_close_matches(class_path, defined, n=5, cutoff=0.0) if defined else []
            found = f" Classes it defines: {', '.join(close)}." if close else ""
            raise ConfigError(
                f"{where}: module '{module_name}' has no attribute '{class_path}'.{found} "
                "Check the spelling of the class name after the colon.")
    if not (inspect.isclass(model_class) and issubclass(model_class, nn.Module)):
        raise ConfigError(
            f"{where}: '{class_path}' in module '{module_name}' is a {type(model_class).__name__}, "
            "not an nn.Module subclass. Point model.name at a class that subclasses torch.nn.Module.")
    # Pass the data's shapes only to constructors that name them; user kwargs take precedence.
    accepted = inspect.signature(model_class).parameters
    arguments: dict = {}
    if "input_shape" in accepted:
        arguments["input_shape"] = input_shape
    if "num_outputs" in accepted:
        arguments["num_outputs"] = num_outputs
    arguments.update(cfg.kwargs)
    try:
        model = model_class(**arguments)
    except Exception as e:
        raise ConfigError(
            f"{where}: constructing {class_path}({', '.join(arguments)}) failed "
            f"({type(e).__name__}: {e}). Check model.kwargs against the constructor's signature "
            f"{class_path}{inspect.signature(model_class)}; input_shape and num_outputs are passed "
            "automatically when the constructor accepts them.") from None
    return model


def _build_gpt(cfg: ModelConfig, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """A decoder-only transformer over `num_outputs` token ids (the vocabulary); input (N, block_size) ids."""
    from .gpt import GPT, GPTConfig
    return GPT(GPTConfig(vocab_size=num_outputs, block_size=cfg.block_size, n_layer=cfg.n_layer,
                         n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, rope=cfg.rope))


BUILDERS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "mlp": _build_mlp,
    "cnn": _build_cnn,
    "resnet": _build_resnet,
    "gpt": _build_gpt,
}


# ---------------------------------------------------------------- inspection

def check_output(model: nn.Module, input_shape: tuple[int, ...], num_outputs: int,
                 dtype: torch.dtype = torch.float32, dataset: Optional[str] = None) -> None:
    """Run one forward pass on a zero batch of 2 and fail early unless the output is (2, num_outputs).

    Runs in eval mode under no_grad and restores every submodule's training mode afterwards.
    `dataset` only makes the message name what needs the outputs.

    >>> check_output(build_model(ModelConfig(), (1, 28, 28), 10), (1, 28, 28), 10)
    """
    input_shape = tuple(int(d) for d in input_shape)
    needs = f"{dataset} needs" if dataset else "the data needs"
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    batch = torch.zeros((2, *input_shape), dtype=dtype, device=device)  # (2, *input_shape)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            output = model(batch)
    except Exception as e:
        raise ConfigError(
            f"The model's forward pass fails on a batch of shape {tuple(batch.shape)} "
            f"({type(e).__name__}: {e}). Its input layer must accept examples of shape {input_shape}; "
            "check model.name and model.kwargs (a custom model receives input_shape when its "
            "constructor accepts it).") from None
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(output, torch.Tensor):
        raise ConfigError(
            f"The model's forward pass returns a {type(output).__name__}, but {needs} a tensor of "
            f"shape (batch, {num_outputs}). Make forward() return the output tensor only.")
    if tuple(output.shape) != (2, num_outputs):
        raise ConfigError(
            f"The model output has shape {tuple(output.shape)} per batch of 2, but {needs} "
            f"{num_outputs} outputs per example, shape (2, {num_outputs}) "
            f"({'one per class' if num_outputs > 1 else 'one per target'}). Make the last layer "
            f"produce {num_outputs} outputs: a custom model can accept num_outputs in its "
            "constructor, or set it with model.kwargs.")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared ones counted once).

    >>> count_parameters(nn.Linear(784, 10))
    7850
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters L1/L2 penalties apply to: weight matrices and conv kernels.

    As in nanoGPT, every parameter with ndim >= 2 (Linear, Conv, Embedding weights); biases
    and normalisation scales/shifts are 1-D and left out.

    >>> [tuple(p.shape) for p in weight_parameters(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))]
    [(3, 4)]
    """
    return [p for p in model.parameters() if p.requires_grad and p.ndim > 1]


# ---------------------------------------------------------------- encoder and head (pre-training)

def head_name(model: nn.Module, key: str = "model.name") -> str:
    """The name of an image or tabular classifier's last layer ('13' of a cnn Sequential, 'fc' of a
    ResNet): what `trainlab pretrain` drops and `model.init_from` starts fresh."""
    if isinstance(model, ResNet):
        return "fc"
    if isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear):
        return str(len(model) - 1)
    raise ConfigError(f"{key}: pre-training needs a built-in mlp, cnn or resnet (an encoder then a last "
                      f"linear layer); {type(model).__name__} is not one.")


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, *input_shape) -> (N, F): what the model's last linear layer takes (the encoder's output)."""
    if isinstance(model, ResNet):
        return model.encode(x)
    for layer in list(model)[:-1]:
        x = layer(x)
    return x


def feature_width(model: nn.Module) -> int:
    """F of features(): the input width of the last linear layer."""
    return getattr(model, head_name(model)).in_features
