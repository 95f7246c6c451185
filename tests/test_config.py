"""The typed config: defaults, dotted overrides, 'did you mean' errors, unused-key warnings."""

import warnings

import pytest

from trainlab.config import Config, KNOWN_KEYS, build_config, load_config, parse_override
from trainlab.errors import ConfigError

from conftest import ROOT


def test_seed_example_pins_the_seed_mlp():
    cfg = load_config(ROOT / "examples/seed_mlp.yaml")
    assert cfg.name == "seed_mlp"
    assert (cfg.data.name, cfg.data.val_fraction) == ("fashion-mnist", 0.1)
    assert (cfg.model.name, cfg.model.hidden, cfg.model.activation) == ("mlp", [128], "relu")
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 0.01, 0.9)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.seed) == (10, 64, 0)


def test_every_key_has_a_default():
    cfg = Config()
    assert cfg.train.epochs == 10 and cfg.optim.name == "sgd" and cfg.data.name == "fashion-mnist"


def test_overrides_use_dotted_keys_and_yaml_values():
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", ["optim.lr=0.05", "train.epochs=5",
                                                       "model.hidden=[256, 128]", "regularize.augment.hflip=true"])
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 5 and cfg.model.hidden == [256, 128]
    assert cfg.regularize.augment.hflip is True
    assert parse_override("data.name=mnist") == ("data.name", "mnist")


@pytest.mark.parametrize("override, expected", [
    ("optim.lrr=0.1", "Did you mean 'optim.lr'?"),
    ("optimm.lr=0.1", "Did you mean 'optim'?"),
    ("train.epoch=3", "Did you mean 'train.epochs'?"),
    ("model.hiden=[64]", "Did you mean 'model.hidden'?"),
])
def test_unknown_keys_suggest_the_close_match(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert "Unknown config key" in str(err.value) and expected in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1", "optim.lr"), ("model.dropout=1.5", "model.dropout"), ("train.batch_size=0", "train.batch_size"),
    ("train.epochs=abc", "train.epochs"), ("data.name=imagenet21k", "data.name"), ("model.name=mpl", "model.name"),
    ("model.depth=21", "model.depth"), ("train.monitor=test.accuracy", "train.monitor"),
])
def test_bad_values_name_the_key_and_value(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert f"'{key}'" in message and override.split("=")[1] in message


def test_misspelt_model_name_suggests_the_builtin():
    with pytest.raises(ConfigError, match="Did you mean 'mlp'"):
        load_config(None, ["model.name=mpl"])


def test_switching_optimiser_warns_about_unused_keys_instead_of_failing():
    with pytest.warns(UserWarning, match="optim.name=adam does not use optim.momentum"):
        cfg = load_config(ROOT / "examples/seed_mlp.yaml", ["optim.name=adam"])
    assert cfg.optim.name == "adam"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(ROOT / "examples/seed_mlp.yaml")  # sgd uses momentum: no warning


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_csv_needs_a_path():
    with pytest.raises(ConfigError, match="data.path"):
        build_config({"data": {"name": "csv"}})


def test_known_keys_cover_nested_sections():
    assert "regularize.augment.crop_padding" in KNOWN_KEYS and "train.early_stopping.patience" in KNOWN_KEYS
