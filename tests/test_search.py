"""trainlab search: spaces, strategies, outputs, resume, several local workers and bad input."""

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from trainlab.config import load_config
from trainlab.errors import ConfigError
from trainlab.search import load_space, search
from trainlab.train import train

from conftest import ROOT, quick_config

LR_GRID = {"optim.lr": {"loguniform": [0.003, 0.3], "grid": 4}}


pytestmark = pytest.mark.usefixtures("one_thread")


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same, for the CLI's processes


def _write(tmp_path, name, obj) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "trainlab", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=ONE_THREAD)


def _rows(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def _trials(out):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    study = optuna.load_study(study_name=_study_name(out),
                              storage=JournalStorage(JournalFileBackend(str(out / "journal.log"))))
    return study.get_trials()


def _study_name(out):
    return yaml.safe_load((out / "search.yaml").read_text())["options"]["study"]


def _complete_once(trials, key, expected):
    """Every expected value of `key` is COMPLETE in exactly one trial (retries and surplus aside)."""
    done = [round(t.params[key], 12) for t in trials if t.state.name == "COMPLETE"]
    assert sorted(done) == sorted(round(v, 12) for v in expected), done


SAMPLED = {"optim.lr": {"loguniform": [0.01, 0.1]}, "optim.momentum": {"uniform": [0.0, 0.9]},
           "model.hidden": {"choice": [[16], [32, 16]]}}


@pytest.fixture(scope="module")
def cli_searches(tmp_path_factory):
    """`trainlab search --json` with each strategy, the three processes side by side (it saves time)."""
    tmp = tmp_path_factory.mktemp("cli")
    grid_cfg = _write(tmp, "grid.yaml", quick_config(train={"epochs": 2}))
    sampled_cfg = _write(tmp, "sampled.yaml", quick_config(train={"epochs": 1}))
    runs = {
        "grid": ["-c", grid_cfg, "-s", _write(tmp, "lr.yaml", LR_GRID), "train.batch_size=64"],
        "random": ["-c", sampled_cfg, "-s", _write(tmp, "sampled_space.yaml", SAMPLED), "--strategy", "random",
                   "--trials", "5"],
        "tpe": ["-c", sampled_cfg, "-s", str(tmp / "sampled_space.yaml"), "--strategy", "tpe", "--trials", "5",
                "--pack-size", "2"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "trainlab", "search", *args, "--out", str(tmp / name),
                                     "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=ONE_THREAD)
             for name, args in runs.items()}
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        done[name] = (json.loads(stdout.strip().splitlines()[-1]), tmp / name)
    return done


def test_grid_search_cli_end_to_end(cli_searches):
    result, out = cli_searches["grid"]
    assert set(result) >= {"best", "trials", "out_dir"} and result["trials"] == 4
    assert set(result["best"]) >= {"params", "value", "trial"}
    grid = np.geomspace(0.003, 0.3, 4)
    # One of the grid's points: float64 geometric points computed two ways differ by ~1e-17 (lr <= 0.3).
    assert min(abs(result["best"]["params"]["optim.lr"] - g) for g in grid) < 1e-12

    rows = _rows(out)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"optim.lr", "val.accuracy@epoch1", "val.accuracy@epoch2", "val.accuracy", "train.loss", "seconds",
            "state"} <= set(rows[0])
    best = max(rows, key=lambda r: float(r["value"]))
    assert int(best["trial"]) == result["best"]["trial"]
    assert float(best["value"]) == pytest.approx(result["best"]["value"])  # one float64 via the CSV: rel 1e-6 ok
    assert all(r["pack_size"] == "4" for r in rows)  # one pack of four

    best_cfg = load_config(out / "best.yaml")  # ready for trainlab train -c
    assert best_cfg.optim.lr == pytest.approx(result["best"]["params"]["optim.lr"])  # float64 via YAML
    assert best_cfg.train.batch_size == 64
    page = (out / "report.html").read_text()
    for title in ("Best trial", "Metric vs each parameter", "Best trial&#x27;s curves", "Trials"):
        assert title in page
    assert page.count("data:image/png;base64,") >= 3
    # The test split: evaluated once, on the best trial only; no other trial's summary has it.
    assert "test" in result["best"] and 0 < result["best"]["test"]["accuracy"] <= 1
    summaries = [json.loads((out / "trials" / f"{int(r['trial']):04d}" / "summary.json").read_text()) for r in rows]
    assert sum("test" in s["metrics"] for s in summaries) == 1


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_random_and_tpe_cli(cli_searches, strategy):
    result, out = cli_searches[strategy]
    assert result["trials"] == 5
    rows = _rows(out)
    assert len(rows) == 5
    for r in rows:
        assert 0.01 <= float(r["optim.lr"]) <= 0.1 and 0.0 <= float(r["optim.momentum"]) <= 0.9
        assert json.loads(r["model.hidden"]) in ([16], [32, 16])
    assert len({r["optim.lr"] for r in rows}) == 5  # five different samples
    assert isinstance(result["best"]["params"]["model.hidden"], list)
    assert "Parallel coordinates" in (out / "report.html").read_text()


def test_example_space_runs(tmp_path):
    result = search(quick_config(train={"epochs": 1}), ROOT / "examples" / "spaces" / "lr.yaml", out=tmp_path / "s",
                    quiet=True)
    assert result["trials"] == 8


def test_two_parameter_grid_has_a_heat_map_and_packs_by_shape(tmp_path):
    space = {"optim.lr": {"loguniform": [0.01, 0.1], "grid": 2}, "model.hidden": {"choice": [[16], [24]]}}
    result = search(quick_config(train={"epochs": 1}), space, out=tmp_path / "s", quiet=True)
    assert result["trials"] == 4
    rows = _rows(tmp_path / "s")
    assert {r["pack_size"] for r in rows} == {"2"}  # two shapes: two packs of two
    assert "Heat map" in (tmp_path / "s" / "report.html").read_text()


def test_pruner_prunes_in_packs(tmp_path):
    space = {"optim.lr": {"loguniform": [1e-4, 0.1], "grid": 8}}
    result = search(quick_config(train={"epochs": 3}), space, pack_size=2, pruner="median", out=tmp_path / "s",
                    quiet=True)
    states = [r["state"] for r in _rows(tmp_path / "s")]
    assert len(states) == 8 and set(states) <= {"COMPLETE", "PRUNED"} and "PRUNED" in states
    assert result["trials"] == states.count("COMPLETE")


def test_resume_continues_without_redoing_finished_trials(tmp_path):
    cfg = _write(tmp_path, "cfg.yaml", quick_config(train={"epochs": 4}, data={"limit": 900}))
    space = _write(tmp_path, "space.yaml", {"optim.lr": {"loguniform": [0.01, 0.1], "grid": 5}})
    out = tmp_path / "search"
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "search", "-c", cfg, "-s", space, "--out", str(out),
                             "--no-packed"], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    finished, refused = [], []
    try:
        for line in proc.stderr:  # "trial N: ... val.accuracy x": kill once two trials are done
            if line.startswith("trial ") and "val.accuracy" in line:
                finished.append(int(line.split()[1].rstrip(":")))
                if len(finished) == 1:  # while it runs, a train and a second search on its folder are refused
                    for other in (lambda: train(quick_config(), out=out), lambda: search(None, resume=out, quiet=True)):
                        with pytest.raises(ConfigError) as err:
                            other()
                        refused.append(str(err.value))
                if len(finished) == 2:
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
    assert len(finished) == 2
    assert len(refused) == 2 and all(f"pid {proc.pid} on host" in message for message in refused), refused
    before = {n: (out / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime_ns for n in finished}

    result = search(None, resume=out, quiet=True)
    trials = _trials(out)
    _complete_once(trials, "optim.lr", np.geomspace(0.01, 0.1, 5))
    assert result["trials"] == 5
    for n in finished:  # the finished trials were not trained again
        assert (out / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime_ns == before[n]
        assert [t.state.name for t in trials if t.number == n] == ["COMPLETE"]
    interrupted = [t for t in trials if t.state.name == "FAIL"]
    assert all(t.user_attrs.get("failure") == "interrupted" for t in interrupted)
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_two_local_workers_share_one_journal_study(tmp_path):
    cfg = _write(tmp_path, "cfg.yaml", quick_config(train={"epochs": 2}))
    space = _write(tmp_path, "space.yaml", {"optim.lr": {"loguniform": [0.01, 0.1], "grid": 6}})
    out = tmp_path / "shared"
    args = [sys.executable, "-m", "trainlab", "search", "-c", cfg, "-s", space, "--out", str(out),
            "--study", "lr", "--pack-size", "2"]
    workers = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ONE_THREAD)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    trials = _trials(out)
    _complete_once(trials, "optim.lr", np.geomspace(0.01, 0.1, 6))
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name != "COMPLETE")
    assert len(_rows(out)) == 6


# ---------------------------------------------------------------- bad input, before any training


@pytest.mark.parametrize("space,message", [
    ({"optim.lrr": {"loguniform": [1e-3, 1.0]}}, "Did you mean 'optim.lr'?"),
    ({"optim": {"choice": [1]}}, "is a section"),
    ({"optim.lr": {"uniform": [0.1, 0.01]}}, "is empty"),
    ({"optim.lr": {"uniform": [0.1, 0.1]}}, "is empty"),
    ({"train.batch_size": {"int": [64, 32]}}, "is empty"),
    ({"optim.lr": {"choice": []}}, "non-empty list"),
    ({"optim.lr": {"loguniform": [0.0, 1.0]}}, "bounds > 0"),
    ({"optim.lr": {"loguniform": [-1.0, 1.0]}}, "bounds > 0"),
    ({"optim.lr": {"loguniform": [1e-3, 1.0], "gird": 3}}, "Did you mean 'grid'?"),
    ({"optim.momentum": {"uniform": [0.0, 1.5], "grid": 3}}, "makes an invalid config"),
    ({"optim.lr": {"uniform": [0.01, 0.1]}}, "needs finite values"),
])
def test_bad_space_is_a_config_error_before_training(tmp_path, space, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("(", r"\(")):
        search(quick_config(), space, out=tmp_path / "s", quiet=True)
    assert not (tmp_path / "s" / "trials").exists()


def test_grid_larger_than_trials_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"The grid has 12 points \(4 x 3\) but --trials is 10"):
        search(quick_config(), {**LR_GRID, "optim.momentum": {"choice": [0.0, 0.5, 0.9]}}, trials=10,
               out=tmp_path / "s", quiet=True)


def test_unreachable_storage_is_an_error_before_training(tmp_path):
    with pytest.raises(ConfigError, match="Cannot use the search storage postgresql://trainlab:\\*\\*\\*@127.0.0.1:9/"):
        search(quick_config(), LR_GRID, storage="postgresql://trainlab:secret@127.0.0.1:9/nothing", study="x",
               out=tmp_path / "s", quiet=True)
    assert not (tmp_path / "s" / "trials").exists()


def test_an_out_folder_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="'.*a-file' is a file, not a folder. Nothing was trained"):
        search(quick_config(), LR_GRID, out=tmp_path / "a-file" / "s", quiet=True)


def test_test_metric_cannot_choose(tmp_path):
    with pytest.raises(ConfigError, match="never used to choose"):
        search(quick_config(), LR_GRID, metric="test.accuracy", out=tmp_path / "s", quiet=True)


def test_cli_bad_input_exits_2_with_the_message(tmp_path):
    cfg = _write(tmp_path, "cfg.yaml", quick_config())
    space = _write(tmp_path, "space.yaml", {"optim.lr": {"loguniform": [0.0, 1.0], "grid": 3}})
    proc = _cli("search", "-c", cfg, "-s", space, "--out", tmp_path / "s")
    assert proc.returncode == 2
    assert "error: Search space 'optim.lr': loguniform needs bounds > 0" in proc.stderr


def test_space_grid_points():
    space = load_space({"optim.lr": {"loguniform": [1e-3, 1.0], "grid": 4},
                        "regularize.l2": {"uniform": [0.0, 1e-3], "grid": 3},
                        "train.batch_size": {"int": [32, 256], "log": True, "grid": 4},
                        "train.epochs": {"int": [1, 3]},
                        "model.hidden": {"choice": [[128], [256, 128]]}})
    # float64 grid points (powers, affine steps): ~1e-16 relative against allclose's rtol=1e-7.
    np.testing.assert_allclose(space["optim.lr"].grid_values(), [1e-3, 1e-2, 1e-1, 1.0])
    np.testing.assert_allclose(space["regularize.l2"].grid_values(), [0.0, 5e-4, 1e-3])
    assert space["train.batch_size"].grid_values() == [32, 64, 128, 256]
    assert space["train.epochs"].grid_values() == [1, 2, 3]
    assert space["model.hidden"].grid_values() == [[128], [256, 128]]
    assert space["optim.lr"].log_axis and not space["regularize.l2"].log_axis
