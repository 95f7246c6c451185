"""report.py: the HTML page and its plots, built from real run directories, rendered in Chromium.

The runs are trained here (digits and diabetes, seconds each) and their eval/ files are written
by `_write_eval` below from the trained model's real test-split predictions, in the format
trainlab evaluate writes, so these tests do not depend on evaluate.py.
"""

import base64
import gc
import html
import json
import re
import shutil
import struct
import subprocess
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure
from matplotlib.image import imread

from trainlab import ConfigError
from trainlab import data as tdata
from trainlab.config import load_config
from trainlab.data.loader import make_batches
from trainlab.diagnose import diagnose
from trainlab.metrics import classification_metrics, regression_metrics
from trainlab.report import (load_run, plot_confusion_matrix, plot_roc_curves, plot_wrong_examples,
                             write_comparison, write_report)
from trainlab.runs import atomic_write_json, atomic_write_text
from trainlab.train import train

from conftest import quick_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


# ---------------------------------------------------------------- building runs


def _predict(run_dir: Path, model: torch.nn.Module):
    """(config, splits, outputs (N, K) or (N, 1), targets (N,)) on the test split, in order."""
    cfg = load_config(run_dir / "config.yaml")
    splits = tdata.load(cfg)
    batches = make_batches(splits, "test", 256, torch.device("cpu"), torch.float32, cfg)
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for x, y in batches.epoch():
            outs.append(model(x))
            ys.append(y)
    return cfg, splits, torch.cat(outs).numpy().astype(np.float64), torch.cat(ys).numpy()


def _write_eval(result) -> None:
    """RUN/eval/* as trainlab evaluate writes them, from real predictions of result.model."""
    run = Path(result.run_dir)
    cfg, splits, out, y = _predict(run, result.model)
    head = {"run_dir": str(run), "split": "test", "checkpoint": "best", "task": splits.task,
            "n_examples": len(y)}
    if splits.task == "classification":
        proba = torch.from_numpy(out).softmax(1).numpy()
        m = classification_metrics(y, proba, splits.classes)
        curves = m.pop("curves")
        atomic_write_json(run / "eval" / "metrics.json", {**head, "classes": splits.classes, **m})
        atomic_write_json(run / "eval" / "curves.json", curves)
        pred, conf = proba.argmax(1), proba.max(1)
        lines = ["index,true,predicted," + ",".join(f"p_{c}" for c in splits.classes)]
        lines += [f"{i},{y[i]},{pred[i]}," + ",".join(f"{p:.6g}" for p in proba[i]) for i in range(len(y))]
        wrong = np.flatnonzero(pred != y)
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:25]
        np.savez(run / "eval" / "wrong_examples.npz", images=splits.test.x.numpy()[wrong], true=y[wrong],
                 predicted=pred[wrong], confidence=conf[wrong], index=wrong)
    else:
        mean, std = splits.extra["target_mean"], splits.extra["target_std"]
        pred, true = out[:, 0] * std + mean, y * std + mean
        atomic_write_json(run / "eval" / "metrics.json", {**head, "classes": None, **regression_metrics(true, pred)})
        lines = ["index,true,predicted"] + [f"{i},{true[i]:.6g},{pred[i]:.6g}" for i in range(len(y))]
    atomic_write_text(run / "eval" / "predictions.csv", "\n".join(lines) + "\n")
    atomic_write_json(run / "eval" / "diagnosis.json", [asdict(f) for f in diagnose(result.history, cfg.to_dict())])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs: digits evaluated, digits trained only (another lr), diabetes evaluated."""
    root = tmp_path_factory.mktemp("runs")
    fast = {"batch_size": 64}  # half the steps of quick_config: the curves only need to exist
    digits = train(quick_config(train=fast), out=root / "digits")
    _write_eval(digits)
    train(quick_config(train=fast, optim={"lr": 0.01}), out=root / "digits_lr001")
    diabetes = train(quick_config(train=fast, data={"name": "diabetes"}, model={"hidden": [16]},
                                  optim={"lr": 0.01}), out=root / "diabetes")
    _write_eval(diabetes)
    return {"digits": root / "digits", "train_only": root / "digits_lr001", "diabetes": root / "diabetes"}


# ---------------------------------------------------------------- checking a page


class _Page(HTMLParser):
    """Collects every tag, attribute value and <style> text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.styles, self.ids, self._in_style = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        self.ids += [v for k, v in attrs if k == "id"]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, text):
        if self._in_style:
            self.styles.append(text)


def _check_page(path: Path) -> _Page:
    """A self-contained page: PNG data URIs only, no scripts, nothing fetched from anywhere."""
    text = path.read_text()
    page = _Page()
    page.feed(text)
    assert text.startswith("<!DOCTYPE html>")
    for banned in ("script", "link", "iframe", "object", "embed"):
        assert banned not in page.tags, f"<{banned}> in a self-contained page"
    for tag, key, value in page.attrs:
        if key in ("src", "href", "srcset", "poster", "data", "action"):
            assert value.startswith(("data:image/png;base64,", "#")), f"<{tag} {key}> loads {value[:60]}"
        assert "http://" not in value and "https://" not in value, f"<{tag} {key}={value[:80]}>"
    assert not re.search(r"url\(|@import|@font-face|https?://", "".join(page.styles)), "CSS fetches something"
    for _, key, value in [a for a in page.attrs if a[0] == "img"]:
        if key == "src":
            png = base64.b64decode(value.split(",", 1)[1], validate=True)
            assert png[:8] == PNG_SIGNATURE
            width, height = struct.unpack(">II", png[16:24])  # IHDR: the first chunk
            assert width >= 100 and height >= 100
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "a temp file was left behind"
    return page


def _images(page: _Page) -> int:
    return sum(1 for tag, key, _ in page.attrs if tag == "img" and key == "src")


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def digits_report(runs):
    """The evaluated digits run's report, written once for the tests that read it."""
    return write_report(runs["digits"])


def test_report_of_an_evaluated_classification_run(runs, digits_report):
    path = digits_report
    assert path == runs["digits"] / "report.html"
    page = _check_page(path)
    for section in ("headline", "diagnosis", "curves", "confusion", "roc", "pr", "reliability", "per-class",
                    "wrong", "config"):
        assert section in page.ids, section
    # loss, accuracy, lr, confusion matrix, ROC, PR, reliability, wrong examples
    assert _images(page) == 8
    text = path.read_text()
    ev = json.loads((runs["digits"] / "eval" / "metrics.json").read_text())
    assert f"{ev['accuracy']:.4g}" in text and f"{ev['ece']:.4g}" in text
    assert text.count("<tr><th scope='row'>") >= 10 + 3  # one row per digit class, one per split
    assert "<pre>data:" in text and "name: digits" in text
    assert "From eval/diagnosis.json" in text and "<code>" in text and "Not evaluated" not in text
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0  # no pyplot figure left open
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is Figure], "a figure outlived its report"


def test_report_of_a_run_that_was_only_trained(runs):
    page = _check_page(write_report(runs["train_only"]))
    text = (runs["train_only"] / "report.html").read_text()
    assert _images(page) == 3  # loss, accuracy, lr
    assert "evaluation" in page.ids and "confusion" not in page.ids  # one note for what evaluate adds
    assert f"<code>trainlab evaluate {runs['train_only']}</code>" in text
    assert "Computed from metrics.jsonl" in text  # the diagnosis still comes from the curves
    assert "best epoch" in text


def test_report_of_a_regression_run(runs):
    page = _check_page(write_report(runs["diabetes"]))
    text = (runs["diabetes"] / "report.html").read_text()
    assert _images(page) == 4  # loss, rmse, lr, predicted vs true
    assert "predictions" in page.ids and "confusion" not in page.ids
    assert "rmse" in text and "r2" in text


def test_comparison_of_two_runs(runs, tmp_path):
    out = write_comparison([runs["digits"], runs["train_only"]], tmp_path / "compare.html")
    page = _check_page(out)
    text = out.read_text()
    assert _images(page) == 3  # loss, accuracy, lr: every run overlaid
    assert "<th></th><th>digits</th><th>digits_lr001</th>" in text  # a column per run
    test_acc = [json.loads((runs[r] / "summary.json").read_text())["metrics"]["test"]["accuracy"]
                for r in ("digits", "train_only")]
    assert f"<td><b>{max(test_acc):.4g}</b></td>" in text  # the better one in bold
    assert "optim.lr" in text and "0.05" in text and "0.01" in text  # the config key that differs
    one = write_comparison([runs["diabetes"]], tmp_path / "one.html")  # one run: its full report
    assert "predictions" in _check_page(one).ids


def test_many_classes_stay_legible():
    rng = np.random.default_rng(0)
    k, n = 100, 1000
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 3.0 * np.eye(k)[y] * rng.uniform(0, 1, (n, 1))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, proba, [f"c{i}" for i in range(k)])
    legend = plot_roc_curves(m["curves"]["roc"]).axes[0].get_legend().get_texts()
    assert len(legend) == 1 + 1 + 5  # chance, macro average, the 5 lowest-AUC classes
    assert "lowest of 100 classes" in plot_roc_curves(m["curves"]["roc"]).axes[0].get_title()
    cm_axes = plot_confusion_matrix(m["confusion_matrix"], [f"c{i}" for i in range(k)]).axes[0]
    assert not cm_axes.texts  # no 10,000 unreadable cell labels


def test_wrong_examples_are_captioned_with_class_names():
    images = np.zeros((3, 1, 8, 8), np.uint8)
    fig = plot_wrong_examples(images, np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([0.6, 0.9, 0.7]),
                              ["cat", "dog", "bird"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true dog\npred bird (0.90)", "true bird\npred cat (0.70)", "true cat\npred dog (0.60)"]


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="at least one run"):
        write_comparison([], tmp_path / "x.html")


def test_unreadable_file_is_reported_not_fatal(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["train_only"], run)
    (run / "summary.json").write_text("{not json")
    text = write_report(run).read_text()
    assert "Unreadable files" in text and "summary.json" in text
    assert load_run(run).summary is None


# ---------------------------------------------------------------- in a real browser

# Why this approach: the DevTools protocol needs a websocket client, which Python's stdlib lacks
# (and neither websockets nor websocket-client is installed). Chromium's own command-line modes
# give the same evidence without one, from two runs of the headless browser:
#  1. the page as written, with --screenshot: the PNG proves it rendered, and with
#     --enable-logging=stderr Chromium prints every console message of the page as a
#     "CONSOLE" line (a thrown error, a failed load, a blocked resource): the page has no
#     scripts, so any such line is an error.
#  2. a copy with a probe script injected first in <head>, with --dump-dom: the probe records
#     error events (scripts, and failed <img> loads, in the capture phase) and console.error
#     calls, and on window load writes {images, loaded (naturalWidth > 0), errors} into a <div>
#     that the dumped DOM carries back.
# test_browser_probe_catches_problems runs the same probe on a broken page, so a probe that
# silently stopped working would fail there rather than pass here.

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]

PROBE = """<script>
window.__errors = [];
addEventListener("error", function (e) {
  __errors.push(e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?").slice(-80)));
}, true);
var __consoleError = console.error;
console.error = function () { __errors.push([].join.call(arguments, " ")); __consoleError.apply(console, arguments); };
addEventListener("load", function () {
  var imgs = [].slice.call(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var div = document.createElement("div");
  div.id = "probe-result";
  div.textContent = JSON.stringify({images: imgs.length, loaded: loaded, errors: __errors});
  document.body.appendChild(div);
});
</script>"""


def _chromium(args: list, profile: Path, chromium: Path = CHROMIUM) -> subprocess.CompletedProcess:
    # A missing browser fails the test (never skips it): the report must be seen to render.
    assert chromium.is_file(), (f"{chromium} is missing: run `make setup` as root "
                                "(it installs Debian's chromium, which this test renders the report in)")
    return subprocess.run([str(chromium), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _probe(page: Path, tmp: Path) -> dict:
    probed = tmp / f"probe-{page.name}"
    text = page.read_text()
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    done = _chromium(["--dump-dom", probed.as_uri()], tmp / "profile-dom")
    found = re.search(r'<div id="probe-result">(.*?)</div>', done.stdout, re.S)
    assert found, f"the probe did not report (chromium exit {done.returncode}):\n{done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_renders_in_chromium(digits_report, tmp_path):
    page = digits_report
    n_images = _images(_check_page(page))

    shot = tmp_path / "report.png"
    done = _chromium(["--window-size=1200,4000", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (1200, 4000)
    assert shot.stat().st_size > 100_000, "the screenshot is nearly empty"
    pixels = imread(shot)[..., :3]
    # Share of non-white pixels: an error page has 0.1%, a rendered report several %: 1% sits
    # between (the threshold separates two kinds of page; rendering differences are ~0).
    assert (pixels.min(axis=2) < 0.9).mean() > 0.01, "the screenshot is mostly blank"
    assert not _console_lines(done.stderr), _console_lines(done.stderr)

    result = _probe(page, tmp_path)
    assert result == {"images": n_images, "loaded": n_images, "errors": []}


def test_browser_probe_catches_problems(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                      '<img src="data:image/png;base64,AAAA"><img src="missing.png">'
                      '<script>console.error("boom"); notDefined();</script></body></html>')
    result = _probe(broken, tmp_path)
    assert result["images"] == 2 and result["loaded"] == 0
    assert any("boom" in e for e in result["errors"]) and any("notDefined" in e for e in result["errors"])
    assert any("missing.png" in e for e in result["errors"])


def test_missing_chromium_fails_with_the_fix(tmp_path):
    with pytest.raises(AssertionError, match="run `make setup` as root"):
        _chromium(["--version"], tmp_path, chromium=tmp_path / "no-chromium")


def test_a_step_budget_is_plotted_against_optimiser_steps():
    from trainlab.report.plots import plot_learning_curves, x_axis
    rows = [{"epoch": k, "step": 250 * k, "tokens": 250 * k * 768, "train_loss": 2.0 / k, "val_loss": 2.1 / k,
             "lr": 1e-3} for k in (1, 2, 3)]  # three evaluations of a 750-step run, 250 steps apart
    x, label = x_axis(rows)
    assert list(x) == [250, 500, 750] and label == "optimiser step"
    ax = plot_learning_curves(rows, best_epoch=3).axes[0]
    assert ax.get_xlabel() == "optimiser step" and list(ax.lines[0].get_xdata()) == [250, 500, 750]
    assert ax.lines[-1].get_xdata()[0] == 750  # the best evaluation's marker sits at its step
    epochs_rows = [{k: v for k, v in r.items() if k != "tokens"} for r in rows]
    assert x_axis(epochs_rows)[1] == "epoch" and list(x_axis(epochs_rows)[0]) == [1, 2, 3]
