"""train.logger: csv writes RUN/metrics.csv each epoch; a missing tensorboard/mlflow package is a clear error."""

import builtins
import csv
import json

import pytest

import trainlab
from trainlab.config import build_config
from trainlab.loggers import make_logger

from conftest import quick_config


def test_csv_logger_mirrors_metrics_jsonl(tmp_path):
    cfg = build_config(quick_config(train={"logger": "csv", "epochs": 3}))
    out = tmp_path / "run"
    seen = []

    def on_epoch_end(epoch, row):  # train() calls the logger just before this hook
        with open(out / "metrics.csv", newline="") as f:
            seen.append(len(list(csv.DictReader(f))))  # rewritten whole after every epoch

    trainlab.train(cfg, out=out, on_epoch_end=on_epoch_end)
    assert seen == [1, 2, 3]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(rows[0])
    for row, line in zip(rows, table):
        assert {k: float(v) for k, v in line.items()} == {k: float(v) for k, v in row.items()}


def test_none_is_no_logger_and_unknown_names_are_config_errors(tmp_path):
    assert make_logger(build_config({}), tmp_path) is None
    with pytest.raises(trainlab.ConfigError, match="train.logger"):
        build_config({"train": {"logger": "wandb"}})


@pytest.mark.parametrize("name, module", [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")])
def test_missing_package_says_what_to_install(tmp_path, monkeypatch, name, module):
    real_import = builtins.__import__

    def failing_import(mod, *args, **kwargs):
        if mod == module or mod.startswith(module + "."):
            raise ModuleNotFoundError(f"No module named '{mod}'")
        return real_import(mod, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(trainlab.ConfigError, match=f"pip install {name}"):
        make_logger(build_config({"train": {"logger": name}}), tmp_path)
