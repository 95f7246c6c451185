"""The model section: which network, its widths and depth, and the pre-trained encoder it may start from."""

from __future__ import annotations

import difflib
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from .section import Section
from .values import plain_data

BUILTIN_MODELS = ("mlp", "cnn", "resnet", "gpt")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu")


class ModelConfig(Section):
    """Input and output widths come from the data; `trainlab check` prints the layers, shapes,
    parameters and multiply-accumulates a config builds."""

    name: str = Field("mlp", json_schema_extra={"allowed": "`mlp`, `cnn`, `resnet`, `gpt` or `package.module:Class`"},
                      description="`mlp`, `cnn` (LeNet-5 style), `resnet` (CIFAR ResNet), `gpt` (a decoder-only "
                      "transformer language model, for text data), or a custom `nn.Module` class as "
                      "`package.module:Class`")
    hidden: list[int] = Field([128], json_schema_extra={"allowed": "each ≥ 1"}, description=
        "mlp: hidden layer widths (`[]` = linear / logistic regression)")
    activation: Literal[ACTIVATIONS] = Field("relu", description="activation after each hidden layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description=
        "dropout probability: mlp after each hidden activation, cnn after each fully connected hidden "
        "layer, resnet before the final linear layer")
    batch_norm: bool = Field(False, description=
        "mlp: BatchNorm1d before each hidden activation; cnn: BatchNorm2d after each conv (resnet always "
        "has it)")
    channels: list[int] = Field([16, 32], json_schema_extra={"allowed": "each ≥ 1"}, description=
        "cnn: output channels of the two 5x5 conv layers (LeNet-5: `[6, 16]`), then fully connected "
        "120 → 84 → outputs")
    depth: int = Field(20, ge=8, json_schema_extra={"allowed": "6n+2: 8, 14, 20, 32, 44, 56, 110, …"},
                       description="resnet: number of layers, 6n+2")
    width: int = Field(16, ge=1, description="resnet: channels of the first stage (doubled per stage)")
    n_layer: int = Field(4, ge=1, description="gpt: transformer blocks")
    n_head: int = Field(4, ge=1, description="gpt: attention heads per block (must divide `model.n_embd`)")
    n_embd: int = Field(128, ge=1, description="gpt: width of the token embeddings and the residual stream")
    block_size: int = Field(64, ge=1, description="gpt: context length, tokens (the windows trained on)")
    bias: bool = Field(True, description="gpt: biases in the linear layers and LayerNorms")
    rope: bool = Field(False, description="gpt: rotary position embeddings instead of learned positions")
    init_from: Optional[str] = Field(None, description=
        "a `trainlab pretrain` run directory: the model starts from its encoder (every layer but the last, "
        "from best.pt, else last.pt); the last layer starts fresh")
    freeze: bool = Field(False, description=
        "with `model.init_from`: train the last layer only (a linear probe), the encoder's weights and "
        "batch-norm statistics kept as pre-trained; `false` fine-tunes every layer")
    kwargs: dict[str, Any] = Field({}, description=
        "custom model: keyword arguments for the class; `input_shape` and `num_outputs` are passed too when "
        "its constructor names them")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v in BUILTIN_MODELS or ":" in v:
            return v
        close = difflib.get_close_matches(v, BUILTIN_MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"must be one of {', '.join(BUILTIN_MODELS)} or 'package.module:Class'.{hint}")

    @field_validator("kwargs")
    @classmethod
    def _plain(cls, v: dict[str, Any]) -> dict[str, Any]:
        plain_data(v)  # config.yaml must read back the same kwargs
        return v

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
