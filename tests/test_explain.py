"""trainlab explain: attributions that mean something, on real data (a Fashion-MNIST CNN, the wine MLP,
a table built from breast_cancer, a tiny GPT on Tiny Shakespeare), and the bad input it refuses."""

import copy
import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import spearmanr

import trainlab
from trainlab.cli import main
from trainlab.config import build_config, load_config
from trainlab.errors import ConfigError
from trainlab.evaluate import format_evaluation, load_run
from trainlab.explain import IG_STEPS, explain, explain_trained
from trainlab.explain import images
from trainlab.explain.attribute import attribute, outputs

from conftest import FASHION, ROOT


# Tiny models on a busy 2-core machine: one thread, module-wide (the module's fixtures train too).
pytestmark = pytest.mark.usefixtures("one_thread_module")


def _npz(run) -> tuple[dict, dict]:
    with np.load(run / "eval" / "attributions.npz", allow_pickle=False) as z:  # plain arrays only
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays.pop("meta")))


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """The CNN of examples/fashion_cnn.yaml on a stratified 3,000-image subset, 2 epochs (~0.79 test
    accuracy), explained with the defaults: (run dir, its TrainedRun, explain's result)."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), \
        "Fashion-MNIST missing: run `make setup` as root (installs Debian's dataset-fashion-mnist)"
    raw = yaml.safe_load((ROOT / "examples/fashion_cnn.yaml").read_text())
    raw["data"]["limit"] = 3000
    raw["train"].update(epochs=2, batch_size=64, progress="none")
    raw["eval"] = {"limit": 1000}  # the first 1,000 test images
    run = tmp_path_factory.mktemp("explain") / "fashion"
    trainlab.train(build_config(raw), out=run)
    trained = load_run(run)
    return run, trained, explain_trained(trained)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """examples/wine_tabular.yaml as it is (at most 60 epochs of a 13-32-3 MLP on 114 wines)."""
    run = tmp_path_factory.mktemp("explain") / "wine"
    cfg = load_config(ROOT / "examples/wine_tabular.yaml", ["train.progress=none"])
    trainlab.train(cfg, out=run)
    return run


# ---------------------------------------------------------------- images


def test_image_maps_are_each_class_most_confident_examples_and_the_report_shows_them(fashion):
    run, trained, result = fashion
    z, meta = _npz(run)
    assert (meta["kind"], meta["method"], meta["split"], meta["steps"]) == ("image", "integrated_gradients",
                                                                             "test", IG_STEPS)
    test = trained.splits.test
    x = images.model_inputs(trained, test.x[:1000])
    proba = outputs(trained.model, x).softmax(1).numpy()    # (1000, 10) what the model says
    y, pred = test.y[:1000].numpy(), proba.argmax(1)
    for c in range(10):
        for right in (True, False):
            pool = np.flatnonzero((y == c) & ((pred == c) if right else (pred != c)))
            chosen = z["index"][(z["true"] == c) & (z["correct"] == right)]
            # One per class and kind (--examples 1), the most confident of its pool, or none if empty.
            assert list(chosen) == ([pool[np.argmax(proba[pool].max(1))]] if len(pool) else [])
    assert np.array_equal(z["images"], test.x[torch.as_tensor(z["index"])].numpy())  # raw pixels, uint8
    assert np.array_equal(z["predicted"], pred[z["index"]])
    assert z["attributions"].shape == (len(z["index"]), 1, 28, 28) and np.isfinite(z["attributions"]).all()
    # Black pixels equal the baseline, x - x' = 0 there: integrated gradients gives them exactly 0.
    black = z["images"] == 0
    assert black.any() and np.all(z["attributions"][black] == 0)

    png = run / "eval" / "explain" / "heatmaps.png"
    assert result["figures"] == [str(png)] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (run / "report.html").read_text()
    section = page[page.index('<section id="attributions"'):]
    assert "integrated gradients on the test split" in section and "<img src=\"data:image/png;base64," in section
    shown = format_evaluation({"run_dir": str(run), "split": "test", "n_examples": 1000, "checkpoint": "best"})
    assert f"attributions: {run / 'eval' / 'attributions.npz'}" in shown


def test_integrated_gradients_complete_on_the_cnn_within_1_percent(fashion):
    """Completeness: sum(attributions) = f(x) - f(x'), f = the logit of the predicted class (before
    the softmax: a probability near 1 saturates and its difference says little), x' = a black image.

    Why 1% holds at IG_STEPS = 128 midpoint steps: the CNN (conv, ReLU, max-pool, batch norm in eval
    mode, linear) is piecewise linear, so along the path f is piecewise linear in a and the integrand
    g(a) = grad f . (x - x') piecewise constant with jumps J_k. The midpoint rule's error is then
    sum_k J_k e_k, |e_k| <= h/2 (h = 1/128; trainlab.explain.methods). The worst case, TV(g) h / 2,
    is not enough here: measured on 8,192-point grids along six such paths, TV(g) is 4.4-9.5
    |f(x) - f(x')| (1.7-3.7% at 128 steps). But the paths cross ~1,500-2,100 kinks at positions set
    by the weights, not by the grid, so the e_k act as independent and uniform on [-h/2, h/2]: the
    error has mean 0 and standard deviation h sqrt(sum J_k^2 / 12), with sqrt(sum J_k^2) = 0.28-0.66
    |f(x) - f(x')| on those paths: 0.06-0.15% at 128 steps. 1% is over 6.5 of those deviations away
    (a chance below 1e-9 per example). The same model predicts the error to fall as 1/n, checked
    below: a quarter of the steps must give a clearly larger gap (4x expected; asserted >= 2x).
    """
    run, trained, _ = fashion
    z, _ = _npz(run)
    total = z["attributions"].reshape(len(z["index"]), -1).astype(np.float64).sum(1)
    change = z["output"] - z["baseline_output"]                  # f(x) - f(x') of each example
    relative = np.abs(total - change) / np.abs(change)
    assert relative.max() < 0.01, relative
    # Captum's own convergence delta is the same gap (float32 sums: 1e-4 of |f(x) - f(x')|).
    assert np.allclose(z["delta"], total - change, atol=1e-4 * np.abs(change).max())

    x = images.model_inputs(trained, torch.as_tensor(z["images"]))
    _, delta = attribute(trained.model, x, torch.as_tensor(z["predicted"]), "integrated_gradients",
                         images.baseline(trained), steps=IG_STEPS // 4)
    coarse = np.abs(delta.double().numpy()) / np.abs(change)
    assert coarse.mean() >= 2 * relative.mean(), (coarse.mean(), relative.mean())


def test_deleting_the_most_attributed_pixels_lowers_the_probability_more_than_random(fashion):
    """200 test images; f = the predicted class's probability. "Removing" a pixel sets it to the
    baseline (black). Attributions at 8 steps: the ranking of pixels needs no 1% completeness (at 16
    steps the drops below agree to 3 decimals).

    Margin: each paired difference d = drop(top 10%) - drop(random 10%) lies in [-1, 1], so its
    standard deviation is at most 1 and the mean of 200 has a standard error of at most
    1/sqrt(200) = 0.071 when attributions rank pixels no better than chance (E[d] = 0). A mean
    above 3/sqrt(200) = 0.212 is therefore 3 standard errors out under the worst-case spread, with
    no estimate from the data; measured here: 0.46 against 0.08 (d = 0.38, sd 0.26).
    """
    _, trained, _ = fashion
    x = images.model_inputs(trained, trained.splits.test.x[:200])   # (200, 1, 28, 28)
    base = images.baseline(trained)
    proba = outputs(trained.model, x).softmax(1)
    predicted = proba.argmax(1)
    attr, _ = attribute(trained.model, x, predicted, "integrated_gradients", base, steps=8)
    flat = attr.flatten(1)                                          # (200, 784)
    k = round(0.1 * flat.shape[1])                                  # 78 pixels
    top = flat.topk(k, dim=1).indices                               # most positive evidence first
    g = torch.Generator().manual_seed(0)
    rand = torch.stack([torch.randperm(flat.shape[1], generator=g)[:k] for _ in range(len(x))])

    def p_after_removing(index):
        xf = x.flatten(1).clone()
        xf.scatter_(1, index, base.flatten(1).expand_as(xf).gather(1, index))
        return outputs(trained.model, xf.view_as(x)).softmax(1).gather(1, predicted[:, None])[:, 0]

    p0 = proba.gather(1, predicted[:, None])[:, 0]
    d = (p0 - p_after_removing(top)) - (p0 - p_after_removing(rand))
    assert d.mean() > 3 / math.sqrt(200), d.mean()


def test_maps_change_when_the_weights_are_reinitialised(fashion):
    """Adebayo et al. (2018), "Sanity checks for saliency maps", cascading randomisation to the
    end: every layer re-initialised (conv and linear weights, batch-norm statistics), then the maps
    of the same examples for the same class compared by Spearman rank correlation, signed.

    Signed: |IG| keeps the input's silhouette whatever the weights (it is multiplied by x - x', zero
    on the black background for any model), which Adebayo et al. report for gradient x input and
    IG; measured here, |maps| correlate at 0.89 after randomisation, signed ones at 0.03. The
    control (the trained model at 32 steps against its 128-step maps) must stay near 1, so that
    a low correlation means changed maps and not a noisy statistic.
    """
    run, trained, _ = fashion
    z, _ = _npz(run)
    keep = np.flatnonzero(z["correct"])                             # each class's most confident
    x = images.model_inputs(trained, torch.as_tensor(z["images"][keep]))
    target = torch.as_tensor(z["predicted"][keep])
    base = images.baseline(trained)
    torch.manual_seed(1)
    random_model = copy.deepcopy(trained.model)
    for m in random_model.modules():
        if hasattr(m, "reset_parameters"):  # conv, linear, batch norm (its running statistics too)
            m.reset_parameters()
    random_model.eval()
    assert not any(torch.equal(p, q) for p, q in zip(random_model.parameters(), trained.model.parameters()))
    trained_32, _ = attribute(trained.model, x, target, "integrated_gradients", base, steps=32)
    random_32, _ = attribute(random_model, x, target, "integrated_gradients", base, steps=32)

    def rho(a, b):
        return np.mean([spearmanr(np.ravel(u), np.ravel(v)).statistic for u, v in zip(a, b)])

    assert rho(trained_32.numpy(), z["attributions"][keep]) > 0.95      # control
    assert rho(trained_32.numpy(), random_32.numpy()) < 0.3


# ---------------------------------------------------------------- tables


def test_integrated_gradients_complete_on_wine_within_the_exact_bound(wine):
    """The wine MLP has one hidden layer: f = v_t . relu(W x + b) + c_t (t the predicted class), so
    along x' + a (x - x') (x' = 0, the training mean) hidden unit j switches at most once, at
    a_j = -b_j / (W_j . x), where g jumps by J_j = v_tj W_j . x. The midpoint rule's error is at most
    (h/2) sum_j |J_j| (trainlab.explain.methods) over the units that switch inside (0, 1): exact
    from the weights, for every test wine. The test checks both that this bound is under 1% of
    |f(x) - f(x')| at IG_STEPS and that the gap Captum leaves stays within it, plus float32
    rounding: 13 attributions, each a mean of 128 gradients, summed carry a relative error of about
    1e-6 (a few float32 ulps per term), so 1e-5 |f(x) - f(x')| covers it tenfold.
    """
    trained = load_run(wine)
    first, last = [m for m in trained.model if isinstance(m, torch.nn.Linear)]
    W, b, V = first.weight.double(), first.bias.double(), last.weight.double()
    x = trained.splits.test.x                                         # (36, 13) standardised
    out = outputs(trained.model, x)
    target = out.argmax(1)
    zero = torch.zeros(1, 13)
    _, delta = attribute(trained.model, x, target, "integrated_gradients", zero)
    change = out.gather(1, target[:, None])[:, 0] - outputs(trained.model, zero)[0, target]
    slope = x.double() @ W.T                                          # (36, 32) W_j . (x - x')
    switch = -b / slope
    inside = (switch > 0) & (switch < 1)
    bound = (V[target] * slope).abs().mul(inside).sum(1) / (2 * IG_STEPS)
    assert (bound / change.abs()).max() < 0.01
    assert torch.all(delta.double().abs() <= bound + 1e-5 * change.abs())


def test_table_label_from_two_columns_ranks_them_first(tmp_path):
    """breast_cancer's 569 real tumours, 30 features; the label is made from two columns only, the
    two least correlated with the rest (|r| <= 0.41 and 0.43 with every other column): an MLP must
    rank them first by mean |attribution| and by permutation importance."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    names = [str(n) for n in bunch.feature_names]
    a, c = names.index("texture error"), names.index("smoothness error")
    z = (bunch.data - bunch.data.mean(0)) / bunch.data.std(0)
    label = (z[:, a] + z[:, c] > 0).astype(int)
    path = tmp_path / "two_columns.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["label"])
        w.writerows([repr(float(v)) for v in row] + [int(t)] for row, t in zip(bunch.data, label))
    raw = {"data": {"name": "csv", "path": str(path), "target": "label", "val_fraction": 0.2},
           "model": {"name": "mlp", "hidden": [32]}, "optim": {"name": "adam", "lr": 0.01},
           "train": {"epochs": 30, "batch_size": 32, "seed": 0, "progress": "none"}}
    trainlab.train(build_config(raw), out=tmp_path / "run")
    result = explain(tmp_path / "run", report=False)
    by_attribution = [r["feature"] for r in result["features"]]
    by_permutation = [r["feature"] for r in sorted(result["features"], key=lambda r: -r["permutation_importance"])]
    assert set(by_attribution[:2]) == set(by_permutation[:2]) == {"texture error", "smoothness error"}
    assert sorted(by_attribution) == sorted(names)  # every feature, named from the CSV header


def test_table_methods_and_cli_json(wine, capsys):
    # Occlusion on a table is the drop of f when one feature is set to the baseline (0, the mean).
    assert main(["explain", str(wine), "--method", "occlusion", "--examples", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["kind"], out["method"], out["split"], out["n_examples"]) == ("table", "occlusion", "test", 3)
    assert len(out["features"]) == 13 and {"alcohol", "proline"} <= {r["feature"] for r in out["features"]}
    z, meta = _npz(wine)
    trained = load_run(wine)
    x = trained.splits.test.x[torch.as_tensor(z["index"])]
    t = int(z["predicted"][0])
    masked = x[:1].repeat(13, 1)
    masked[torch.arange(13), torch.arange(13)] = 0.0
    drops = outputs(trained.model, x[:1])[0, t] - outputs(trained.model, masked)[:, t]
    assert np.allclose(z["attributions"][0], drops.numpy(), atol=1e-5)
    assert np.allclose(z["values"], x.double().numpy() * trained.splits.extra["feature_scale"]
                       + trained.splits.extra["feature_mean"])  # shown in the data's units

    saliency = explain_trained(trained, method="saliency", report=False)
    z, _ = _npz(wine)
    assert saliency["method"] == "saliency" and (z["attributions"] >= 0).all()  # |gradient|


# ---------------------------------------------------------------- language models


def test_gpt_token_attributions_and_attention_maps(tmp_path):
    """A 2-layer, 2-head GPT trained 40 steps on the shipped Tiny Shakespeare."""
    cfg = load_config(ROOT / "examples/shakespeare_char.yaml", [
        "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "train.steps=40",
        "eval.every=40", "train.batch_size=8", "eval.limit=64", "train.progress=none", "schedule.warmup_steps=5"])
    trainlab.train(cfg, out=tmp_path / "gpt")
    result = explain(tmp_path / "gpt", report=False)
    z, meta = _npz(tmp_path / "gpt")
    assert (meta["kind"], meta["split"]) == ("text", "val")  # the example has no test split
    n, t = z["tokens"].shape
    assert (n, t) == (4, 32) and z["attributions"].shape == (4, 32)
    assert z["attention"].shape == (4, 2, 2, 32, 32)                  # (N, L, nh, T, T)
    assert [p["text"] for p in result["prompts"]] == ["".join(row) for row in z["tokens"]]
    assert result["figures"][-1].endswith("attention.png")
    # Attributions on the embeddings (LayerIntegratedGradients), f = the predicted next token's logit:
    # the saved f(x) - f(baseline) is the one Captum integrated, to float32 rounding (7 digits, of
    # which a sum over 32 tokens x 32 channels loses at most 3: 1e-4 of the largest change).
    change = z["output"] - z["baseline_output"]
    assert np.allclose(z["attributions"].sum(1) - change, z["delta"], atol=1e-4 * np.abs(change).max())

    # The maps are the model's own attention: causal rows that sum to 1, and weights @ values equals
    # what scaled_dot_product_attention gave c_proj inside the model.
    att = z["attention"]
    assert np.allclose(att.sum(-1), 1, atol=1e-5) and np.all(np.triu(att, k=1) == 0)
    trained = load_run(tmp_path / "gpt")
    model, ids = trained.model, torch.as_tensor(z["ids"])
    caught = {}
    hooks = [model.blocks[0].attn.c_attn.register_forward_hook(lambda m, i, o: caught.update(qkv=o)),
             model.blocks[0].attn.c_proj.register_forward_hook(lambda m, i, o: caught.update(y=i[0]))]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    v = caught["qkv"][..., 64:].view(n, t, 2, 16).transpose(1, 2)       # (N, nh, T, hs)
    y = (torch.as_tensor(att[:, 0]) @ v).transpose(1, 2).reshape(n, t, 32)
    assert torch.allclose(y, caught["y"], atol=1e-5)

    one = explain(tmp_path / "gpt", method="occlusion", prompt="ROMEO:", report=False)
    assert one["n_examples"] == 1 and one["prompts"][0]["text"] == "ROMEO:"
    with pytest.raises(ConfigError, match="tokenizer|character"):
        explain(tmp_path / "gpt", prompt="ROMEO: €", report=False)  # not among the text's 65 characters


# ---------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error_with_the_documented_exit_code(wine, tmp_path, capsys):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(wine / "config.yaml", untrained / "config.yaml")   # a run killed before its first epoch
    cases = [
        ([str(untrained)], 2, "has no checkpoint"),
        ([str(wine), "--method", "salency"], 2, "Did you mean 'saliency'"),
        ([str(wine), "--split", "train"], 2, "Allowed: test, val"),
        ([str(wine), "--examples", "0"], 2, "at least 1"),
        ([str(wine), "--prompt", "ROMEO:"], 2, "language-model runs"),
        ([str(tmp_path / "missing")], 2, "does not exist"),
    ]
    for args, code, message in cases:
        assert main(["explain", *args]) == code, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    broken = tmp_path / "broken"
    shutil.copytree(wine, broken)
    for name in ("best.pt", "last.pt"):
        (broken / "checkpoints" / name).write_bytes(b"not a checkpoint")
    assert main(["explain", str(broken)]) == 3                        # unreadable checkpoint: exit 3
    assert "best.pt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="Unknown attribution method"):
        explain(tmp_path / "missing", method="shap")                  # usage is checked before the run
