"""The CLI as a user runs it: exit codes of DESIGN.md, clear one-paragraph errors, --json."""

import json

from trainlab.config import load_config
from trainlab.train import train


from conftest import ROOT, run_cli, truncated_fashion_root

SEED = ROOT / "examples/seed_mlp.yaml"


def _assert_clean_error(proc, code, *words):
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "\nerror: " in "\n" + proc.stderr
    for word in words:
        assert word in proc.stderr


def test_seed_mlp_three_epochs_reaches_085_on_fashion_mnist(tmp_path, fashion_available):
    proc = run_cli("train", "-c", SEED, "train.epochs=3", "--json", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # 0.8636 here, train.seed=0..4: 0.8609..0.8661 (seed sigma 0.002) on the 10,000 test images.
    # Fashion-MNIST training is chaotic under rounding (ReLU flips, see test_parity.py), so another
    # CPU's run can decorrelate from this one as much as a new seed does, at worst: 0.85 is 0.011
    # (110 images, 5 seed-sigmas) below the worst seed.
    assert summary["metrics"]["test"]["accuracy"] >= 0.85
    assert summary["epochs_run"] == 3 and summary["run_dir"] == str(tmp_path / "run")
    # One plain line per epoch when not on a terminal: no progress-bar spam in logs.
    assert sum(line.startswith("epoch ") for line in proc.stderr.splitlines()) == 3
    assert "device cpu, " in proc.stderr and " threads" in proc.stderr  # the thread count is reported


def test_bad_config_exits_2_with_did_you_mean(tmp_path):
    proc = run_cli("train", "-c", SEED, "optim.lrr=0.1", "--out", tmp_path / "r")
    _assert_clean_error(proc, 2, "optim.lrr", "Did you mean 'optim.lr'?")
    proc = run_cli("train", "-c", SEED, "model.dropout=1.5")
    _assert_clean_error(proc, 2, "model.dropout", "1.5")
    proc = run_cli("train", "-c", tmp_path / "missing.yaml")
    _assert_clean_error(proc, 2, "missing.yaml")


def test_missing_dataset_exits_3_listing_roots_and_files(tmp_path):
    proc = run_cli("train", "-c", SEED, "data.name=kmnist", "data.download=false", "--out", tmp_path / "r",
                   env={"TRAINLAB_DATA": str(tmp_path / "empty"), "HOME": str(tmp_path)})
    _assert_clean_error(proc, 3, str(tmp_path / "empty" / "kmnist"), "train-images-idx3-ubyte.gz")


def test_truncated_data_file_exits_3_naming_it(tmp_path, fashion_available):
    root, broken = truncated_fashion_root(tmp_path, fashion_available)
    proc = run_cli("train", "-c", SEED, "--data-dir", root, "--out", tmp_path / "r")
    _assert_clean_error(proc, 3, str(broken))


def test_csv_without_the_target_column_exits_3(tmp_path):
    csv = tmp_path / "table.csv"
    csv.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    proc = run_cli("train", "data.name=csv", f"data.path={csv}", "data.target=species", "--out", tmp_path / "r")
    _assert_clean_error(proc, 3, "species", str(csv))


def test_model_whose_output_does_not_fit_the_dataset_exits_2(tmp_path):
    module = tmp_path / "wrongmodel.py"
    module.write_text("import torch\nclass Five(torch.nn.Module):\n    def __init__(self):\n"
                      "        super().__init__(); self.fc = torch.nn.Linear(64, 5)\n"
                      "    def forward(self, x):\n        return self.fc(x.flatten(1))\n")
    proc = run_cli("train", "data.name=digits", "model.name=wrongmodel:Five", "--out", tmp_path / "r",
                   env={"PYTHONPATH": str(tmp_path)})
    _assert_clean_error(proc, 2, "10")


def test_divergence_exits_4_and_says_where(tmp_path):
    proc = run_cli("train", "data.name=digits", "optim.lr=1e6", "--out", tmp_path / "r")
    _assert_clean_error(proc, 4, "diverged at epoch 1 step")
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["stopped_because"] == "diverged"


def test_existing_out_folder_is_not_overwritten(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    proc = run_cli("train", "data.name=iris", "--out", tmp_path / "r")
    _assert_clean_error(proc, 2, "--resume")
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    proc = run_cli("train", "--resume", tmp_path)
    _assert_clean_error(proc, 2, "not a run directory")


def test_corrupt_checkpoint_is_refused_without_unpickling(tmp_path):
    ok = run_cli("train", "data.name=iris", "train.epochs=1", "--out", tmp_path / "r")
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "r" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    proc = run_cli("train", "--resume", tmp_path / "r")
    _assert_clean_error(proc, 3, "last.pt")


def test_report_command_for_one_and_several_runs(tmp_path):
    for name in ("a", "b"):  # the runs are trained in this process: the commands under test are report's
        train(load_config(None, ["data.name=iris", "train.epochs=2", "train.progress=none",
                                 f"optim.lr={0.05 if name == 'a' else 0.2}"]), out=tmp_path / name)
    one = run_cli("report", tmp_path / "a", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout.strip().splitlines()[-1]) == {"report": str(tmp_path / "a" / "report.html")}
    both = run_cli("report", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "ab.html")
    assert both.returncode == 0, both.stderr
    page = (tmp_path / "ab.html").read_text()
    assert "data:image/png;base64," in page and "a" in page and "b" in page
    missing = run_cli("report", tmp_path / "nope")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
