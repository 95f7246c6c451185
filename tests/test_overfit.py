"""Issue 3's acceptance: a run made to overfit is diagnosed with the right onset, its pasted remedy
narrows the gap, and the Fashion-MNIST report renders in Chromium with every picture."""

import json

from trainlab.config import load_config
from trainlab.diagnose import diagnose
from trainlab.evaluate import evaluate
from trainlab.train import train

from conftest import ROOT
from test_report import _chromium, _probe

OVERFIT = ["data.limit=1000", "data.val_fraction=0.2", "model.hidden=[1024, 1024]", "optim.name=adam",
           "optim.lr=0.001", "train.epochs=50", "train.progress=none"]


def _end_gap(rows):
    """Validation minus training loss at the last epoch: how far the model has overfitted."""
    return rows[-1]["val_loss"] - rows[-1]["train_loss"]


def test_overfitting_is_found_at_its_onset_and_the_remedy_narrows_the_gap(tmp_path, fashion_available):
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", OVERFIT)
    result = train(cfg, out=tmp_path / "overfit")
    rows = result.history
    true_onset = min(rows, key=lambda r: r["val_loss"])["epoch"]

    evaluate(result.run_dir, report=False)
    findings = json.loads((result.run_dir / "eval" / "diagnosis.json").read_text())
    overfitting = [f for f in findings if f["kind"] == "overfitting"]
    assert overfitting, findings
    # Within 2 epochs of the val-loss minimum: the detector reads a noisy curve (a rule on a
    # smoothed slope), not the argmin. Measured over train.seed=0..3: off by 1, 1, 0, 0 epochs.
    # This Fashion-MNIST run is chaotic under another CPU's rounding (see test_parity.py), so a
    # new seed's spread is the yardstick: 2 is 1 epoch clear of the worst seed.
    assert abs(overfitting[0]["epoch"] - true_onset) <= 2
    assert [f.kind for f in diagnose(rows, cfg.to_dict())] == [f["kind"] for f in findings]

    # Paste the printed remedies back as overrides, as a user would.
    remedies = overfitting[0]["remedies"]
    assert remedies and all("=" in r for r in remedies)
    fixed = train(load_config(ROOT / "examples/seed_mlp.yaml", OVERFIT + remedies), out=tmp_path / "fixed")
    # Measured over train.seed=0..3: the remedied run's end gap is -0.09..-0.20 times the
    # overfitted one's (validation loss below training loss under dropout and augmentation), far
    # inside 0.5x, which is a qualitative "narrowed it by half" claim.
    assert _end_gap(fixed.history) < 0.5 * _end_gap(rows)


def test_fashion_mnist_report_renders_with_every_picture(tmp_path, fashion_available):
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", ["data.limit=12000", "train.epochs=2", "train.progress=none"])
    result = train(cfg, out=tmp_path / "seed")
    metrics = evaluate(result.run_dir)
    assert metrics["n_examples"] == 10000  # the whole Fashion-MNIST test split
    page = result.run_dir / "report.html"
    text = page.read_text()
    for section in ("Learning curves", "Confusion matrix", "ROC", "Precision", "Reliability",
                    "confidently wrong", "Diagnosis"):
        assert section.lower() in text.lower(), section
    result_probe = _probe(page, tmp_path)
    assert result_probe["images"] >= 8 and result_probe["loaded"] == result_probe["images"]  # counts: exact
    assert result_probe["errors"] == []
    shot = tmp_path / "shot.png"
    done = _chromium(["--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0 and shot.stat().st_size > 100_000
