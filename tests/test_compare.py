"""trainlab compare and sweep-size: table shapes, paired t-tests that flag a clearly worse setting,
--vary parsing and its errors, parameter counts and the capacity curve."""

import json
from pathlib import Path

import pytest

from trainlab.compare import compare, mean_rows, parse_vary, resolved_values, split_values, sweep_size
from trainlab.config import build_config
from trainlab.crossval import derive
from trainlab.errors import ConfigError

from conftest import quick_config, run_cli

DIGITS = quick_config()


@pytest.fixture(scope="module")
def lr_compare(tmp_path_factory):
    return compare(DIGITS, {"optim.lr": [0.05, 1e-5]}, seeds=3, out=tmp_path_factory.mktemp("cmp") / "lr")


def test_compare_table_shape(lr_compare):
    c = lr_compare
    assert c["metric"] == "val.accuracy" and c["seeds"] == 3
    assert [s["values"] for s in c["settings"]] == [{"optim.lr": 0.05}, {"optim.lr": 1e-5}]
    for s in c["settings"]:
        assert set(s["metrics"]) >= {"train.accuracy", "val.accuracy", "val.loss", "test.accuracy", "test.loss"}
        for stat in s["metrics"].values():
            assert len(stat["values"]) == 3 and stat["mean"] is not None and stat["std"] is not None
        assert len(s["run_dirs"]) == 3 and all((Path(d) / "summary.json").is_file() for d in s["run_dirs"])
    out = Path(c["out_dir"])
    assert json.loads((out / "compare.json").read_text())["best"] == c["best"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "p vs best" in html


def test_clearly_worse_setting_flagged(lr_compare):
    best, worse = lr_compare["settings"]
    assert lr_compare["best"] == best["label"] == "optim.lr=0.05"
    assert best["p_value"] is None and best["verdict"] == "best"
    # lr 1e-5 barely moves the weights (val accuracy near 0.1 chance) while lr 0.05 reaches ~0.95
    # (see test_train.py): a paired difference of ~-0.85 on 3 seeds with a spread of ~0.01, so
    # p is far below 0.05 and -0.5 is a qualitative floor; digits runs move by ~1e-6 on another CPU.
    assert worse["p_value"] is not None and worse["p_value"] < 0.05
    assert worse["significant"] is True and worse["diff_vs_best"] < -0.5


def test_seeds_are_paired_and_equal_settings_not_flagged(tmp_path):
    """Settings that train identically (only the evaluation batch size differs) give the same runs
    seed by seed, so the paired test sees no difference: p = 1, not flagged."""
    c = compare(DIGITS, {"eval.batch_size": [256, 1024]}, seeds=2, out=tmp_path / "same")
    a, b = c["settings"]
    assert a["metrics"]["val.accuracy"]["values"] == b["metrics"]["val.accuracy"]["values"]
    assert b["p_value"] == 1.0 and b["significant"] is False


def test_split_and_parse_vary():
    assert split_values("sgd,adam") == ["sgd", "adam"]
    assert split_values("[64],[128,64]") == ["[64]", "[128,64]"]
    assert split_values("[64];[128,64]") == ["[64]", "[128,64]"]
    assert split_values("{a: 1, b: 2},'x,y'") == ["{a: 1, b: 2}", "'x,y'"]
    assert parse_vary("optim.lr=0.1,0.001") == ("optim.lr", [0.1, 0.001])
    assert parse_vary("optim.name=sgd") == ("optim.name", ["sgd"])
    assert parse_vary("model.hidden=[64],[128, 64]") == ("model.hidden", [[64], [128, 64]])
    assert parse_vary("model.hidden=[]") == ("model.hidden", [[]])
    for bad in ("optim.lr", "=1,2", "optim.lr=", "optim.lr=0.1,,0.2"):
        with pytest.raises(ConfigError):
            parse_vary(bad)


def test_vary_errors_before_training(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'optim.lr'"):
        compare(DIGITS, {"optim.lrr": [0.1]}, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="section"):
        compare(DIGITS, {"optim": [0.1]}, out=tmp_path / "b")
    with pytest.raises(ConfigError, match="train.seed"):
        compare(DIGITS, {"train.seed": [1, 2]}, out=tmp_path / "c")
    with pytest.raises(ConfigError, match="optim.name"):
        compare(DIGITS, {"optim.name": ["sgd", "adamm"]}, out=tmp_path / "d")
    with pytest.raises(ConfigError, match="more than once"):
        compare(DIGITS, {"optim.lr": [0.05, 0.050]}, out=tmp_path / "e")
    assert not any(tmp_path.iterdir())


def test_values_resolved_by_the_config():
    cfg = derive(build_config(DIGITS), {"optim.lr": "1e-3", "model.hidden": [16]})  # '1e-3': a YAML 1.1 string
    assert resolved_values(cfg, ["optim.lr", "model.hidden"]) == {"optim.lr": 0.001, "model.hidden": [16]}


def test_mean_rows():
    rows = mean_rows([[{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}],
                      [{"epoch": 1, "val_loss": 3.0}]])
    assert rows == [{"epoch": 1, "val_loss": 2.0}, {"epoch": 2, "val_loss": 0.5}]


def test_compare_cli_json_with_list_values(tmp_path):
    out = tmp_path / "cmp"
    proc = run_cli("compare", "data.name=iris", "train.epochs=2", "train.progress=none",
                   "--vary", "model.hidden=[8];[16,8]", "--vary", "optim.name=sgd,adam", "--seeds", "2",
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["values"] for s in result["settings"]] == [
        {"model.hidden": h, "optim.name": o} for h in ([8], [16, 8]) for o in ("sgd", "adam")]
    assert all(len(s["run_dirs"]) == 2 for s in result["settings"])
    assert "p vs best" in proc.stdout  # the printed table


@pytest.mark.parametrize("vary, message", [
    ("optim.lrr=0.1,0.2", "Did you mean 'optim.lr'"),
    ("optim.lr=0.1,-1", "optim.lr"),
])
def test_compare_cli_errors_exit_2(vary, message):
    proc = run_cli("compare", "data.name=iris", "--vary", vary)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_sweep_size_capacity(tmp_path):
    s = sweep_size(DIGITS, widths=[8, 64], depths=[1, 2], out=tmp_path / "sweep")
    points = {(p["depth"], p["width"]): p for p in s["points"]}
    assert set(points) == {(1, 8), (1, 64), (2, 8), (2, 64)}
    n_in, n_out = 64, 10  # digits: 8x8 pixels, 10 classes
    for (depth, width), p in points.items():
        widths = [n_in] + [width] * depth + [n_out]
        assert p["params"] == sum(a * b + b for a, b in zip(widths, widths[1:]))
        assert p["hidden"] == [width] * depth
    for depth in (1, 2):
        assert points[(depth, 64)]["train"] >= points[(depth, 8)]["train"]
    assert [p["params"] for p in s["points"]] == sorted(p["params"] for p in s["points"])
    assert s["saturates_at"] is not None and s["metric"] == "accuracy"
    out = Path(s["out_dir"])
    assert json.loads((out / "sweep.json").read_text())["points"][0]["params"] == s["points"][0]["params"]
    assert (out / "capacity.png").is_file() and "data:image/png;base64," in (out / "report.html").read_text()


def test_sweep_size_cli_needs_mlp():
    proc = run_cli("sweep-size", "data.name=digits", "model.name=cnn", "--widths", "8", "--depths", "1")
    assert proc.returncode == 2 and "model.name=mlp" in proc.stderr
