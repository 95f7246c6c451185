"""Tests of the model registry: shapes, parameter counts, seeded parity with hand-written PyTorch, errors."""

import textwrap
import uuid

import pytest
import torch
from torch import nn

from trainlab.config import ModelConfig
from trainlab.errors import ConfigError
from trainlab.models import build_model, check_output, count_parameters, weight_parameters

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8)]


def reference_seed_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def test_seed_mlp_parameter_count():
    model = build_model(ModelConfig(name="mlp", hidden=[128]), (1, 28, 28), 10)
    assert count_parameters(model) == 784 * 128 + 128 + 128 * 10 + 10 == 101_770


def test_seed_mlp_matches_hand_written_sequential_after_same_seed():
    torch.manual_seed(123)
    model = build_model(ModelConfig(name="mlp", hidden=[128]), (1, 28, 28), 10)
    torch.manual_seed(123)
    reference = reference_seed_mlp()
    ours, theirs = list(model.parameters()), list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert [type(m) for m in model] == [type(m) for m in reference]  # plain nn.Linear layers
    reference.load_state_dict(model.state_dict())  # same keys, strict
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("shape", SHAPES + [(13,)])
def test_mlp_output_shape(shape):
    model = build_model(ModelConfig(name="mlp", hidden=[32, 16]), shape, 7)
    assert model(torch.randn(5, *shape)).shape == (5, 7)
    check_output(model, shape, 7)


def test_mlp_without_hidden_layers_is_linear_regression():
    model = build_model(ModelConfig(name="mlp", hidden=[]), (13,), 1)
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear]
    assert count_parameters(model) == 14


@pytest.mark.parametrize("name", ["cnn", "resnet"])
@pytest.mark.parametrize("shape", SHAPES)
def test_image_model_output_shape(name, shape):
    model = build_model(ModelConfig(name=name, depth=8, width=4), shape, 10)
    assert model(torch.randn(3, *shape)).shape == (3, 10)
    check_output(model, shape, 10)


def test_cnn_is_lenet_shaped():
    model = build_model(ModelConfig(name="cnn", channels=[6, 16]), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16 * 5 * 5, 120), (120, 84), (84, 10)]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_batch_norm_and_dropout_present_when_asked(name):
    shape = (1, 28, 28)
    plain = build_model(ModelConfig(name=name), shape, 10)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in plain.modules())
    model = build_model(ModelConfig(name=name, batch_norm=True, dropout=0.3), shape, 10)
    norm = nn.BatchNorm1d if name == "mlp" else nn.BatchNorm2d
    assert any(isinstance(m, norm) for m in model.modules())
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.3 for m in dropouts)


@pytest.mark.parametrize("activation, layer", [("tanh", nn.Tanh), ("gelu", nn.GELU), ("silu", nn.SiLU)])
def test_activation_is_used(activation, layer):
    model = build_model(ModelConfig(name="mlp", hidden=[8, 8], activation=activation), (4,), 2)
    assert sum(isinstance(m, layer) for m in model.modules()) == 2


@pytest.mark.parametrize("depth, projections", [(8, 2), (20, 2)])
def test_resnet_conv_count(depth, projections):
    n = (depth - 2) // 6
    model = build_model(ModelConfig(name="resnet", depth=depth, width=4), (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    one_by_one = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(convs) == 6 * n + 1 + projections
    assert len(one_by_one) == projections
    assert model.fc.in_features == 4 * 4


def test_weight_parameters_are_matrices_and_kernels_only():
    model = build_model(ModelConfig(name="cnn", batch_norm=True), (1, 28, 28), 10)
    weights = weight_parameters(model)
    expected = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert [id(p) for p in weights] == [id(p) for p in expected]


def test_check_output_restores_training_mode():
    model = build_model(ModelConfig(name="mlp", batch_norm=True, dropout=0.5), (1, 28, 28), 10)
    model.train()
    model[-1].eval()  # a mixed state must come back as it was
    check_output(model, (1, 28, 28), 10)
    assert model.training and model[1].training and not model[-1].training


def test_check_output_names_expected_size():
    model = build_model(ModelConfig(name="mlp"), (1, 28, 28), 5)
    with pytest.raises(ConfigError, match=r"\(2, 5\).*fashion-mnist needs 10 outputs"):
        check_output(model, (1, 28, 28), 10, dataset="fashion-mnist")


def test_check_output_reports_failing_forward():
    model = build_model(ModelConfig(name="mlp"), (13,), 3)
    with pytest.raises(ConfigError, match="forward pass fails"):
        check_output(model, (1, 28, 28), 3)


def test_cnn_on_tabular_input_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.name=cnn.*\(C, H, W\)") as err:
        build_model(ModelConfig(name="cnn"), (13,), 3)
    assert err.value.exit_code == 2


CUSTOM_MODULE = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self, input_shape, num_outputs, hidden=4):
        super().__init__()
        self.hidden = hidden
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.net(x)

class KwargsOnly(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(13, width)

    def forward(self, x):
        return self.fc(x)

class Broken(nn.Module):
    def __init__(self):
        raise RuntimeError("boom")

NOT_A_MODEL = 3
"""


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    """A fresh, importable module of custom models: its name, e.g. 'custom_models_<n>'."""
    name = f"custom_models_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(CUSTOM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_custom_model_gets_shapes_and_kwargs(custom_module):
    model = build_model(ModelConfig(name=f"{custom_module}:Tiny", kwargs={"hidden": 9}), (13,), 3)
    assert model.hidden == 9
    assert model(torch.randn(2, 13)).shape == (2, 3)
    check_output(model, (13,), 3)


def test_custom_model_without_shape_arguments(custom_module):
    model = build_model(ModelConfig(name=f"{custom_module}:KwargsOnly", kwargs={"width": 3}), (13,), 3)
    check_output(model, (13,), 3)
    with pytest.raises(ConfigError, match="needs 2 outputs"):
        check_output(model, (13,), 2)


@pytest.mark.parametrize("target, message", [
    ("no_such_package.models:Net", "cannot import module 'no_such_package.models'.*PYTHONPATH"),
    ("{m}:Missing", "has no attribute 'Missing'.*Tiny"),
    ("{m}:NOT_A_MODEL", "not an nn.Module subclass"),
    ("{m}:Broken", "RuntimeError: boom"),
    ("{m}:KwargsOnly", "width"),  # required kwarg not given
])
def test_custom_model_errors_name_the_key(custom_module, target, message):
    name = target.format(m=custom_module)
    with pytest.raises(ConfigError, match=message) as err:
        build_model(ModelConfig(name=name), (13,), 3)
    assert f"model.name='{name}'" in str(err.value)
    assert err.value.exit_code == 2
