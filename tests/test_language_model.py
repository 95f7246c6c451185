"""A GPT trained by train() on Tiny Shakespeare: step budgets, metrics rows, tokenizer.json, resume,
generation, and the bad input a language-model config can hold."""

import json
import math

import pytest
import torch

from trainlab import checkpoint
from trainlab.config import load_config
from trainlab.errors import ConfigError, DataError, Interrupted
from trainlab.generate import generate
from trainlab.train import train

from conftest import ROOT, ctrl_c_at, run_cli

# A small GPT on the shipped Tiny Shakespeare: 40 AdamW steps, a row every 10, warm-up + cosine,
# dropout (global RNG) and random windows (their own generator): every kind of state resume restores.
SMALL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.dropout=0.1",
         "train.steps=40", "eval.every=10", "train.batch_size=8", "eval.limit=64", "train.progress=none",
         "schedule.warmup_steps=5"]


def _config(*overrides):
    return load_config(ROOT / "examples/shakespeare_char.yaml", [*SMALL, *overrides])


def _without_time(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_second")} for r in rows]


def test_gpt_trains_by_steps_with_language_metrics(tmp_path, one_thread):
    result = train(_config(), out=tmp_path / "run")
    rows = result.history
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert [r["tokens"] for r in rows] == [10 * 8 * 32 * k for k in (1, 2, 3, 4)]  # steps x batch x block
    for r in rows:
        # Perplexity and bits per character are functions of the same mean loss in nats.
        assert math.isclose(r["val_perplexity"], math.exp(r["val_loss"]), rel_tol=1e-12)
        assert math.isclose(r["val_bits_per_char"], r["val_loss"] / math.log(2), rel_tol=1e-12)
        assert r["tokens_per_second"] > 0
    # 65 characters: an untrained model scores about ln 65 = 4.17 nats; 40 steps must learn the
    # character frequencies at least (their entropy is 3.3 nats), so below 3.8 leaves a wide margin.
    assert rows[-1]["val_loss"] < 3.8 < math.log(65)
    assert result.summary["stopped_because"] == "steps"
    assert set(result.metrics) == {"train", "val"}  # test_fraction 0: train first, val last, no test
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert saved["kind"] == "char" and len(saved["chars"]) == 65


def test_ctrl_c_mid_period_then_resume_equals_uninterrupted(tmp_path, one_thread):
    cfg = _config()
    reference = train(cfg, out=tmp_path / "reference")

    interrupt = ctrl_c_at(3, 4)  # evaluation period 3, step 4

    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "cut", on_step_end=interrupt)
    assert checkpoint.load(tmp_path / "cut" / "checkpoints" / "last.pt")["progress"]["step"] == 4
    fitted = (tmp_path / "cut" / "tokenizer.json").stat().st_mtime_ns
    resumed = train(None, resume=tmp_path / "cut")
    assert (tmp_path / "cut" / "tokenizer.json").stat().st_mtime_ns == fitted  # read back, never re-fitted
    assert _without_time(resumed.history) == _without_time(reference.history)
    assert resumed.metrics == reference.metrics
    for a, b in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)


def test_generate_continues_a_prompt_greedy_with_and_without_cache(tmp_path, one_thread):
    train(_config(), out=tmp_path / "run")
    cached = generate(tmp_path / "run", "ROMEO:", tokens=24, temperature=0)
    uncached = generate(tmp_path / "run", "ROMEO:", tokens=24, temperature=0, use_cache=False)
    assert cached["text"] == uncached["text"] and cached["tokens"] == 24  # 6 + 24 tokens fit block_size 32
    sampled = [generate(tmp_path / "run", "ROMEO:", tokens=24, seed=1)["text"] for _ in range(2)]
    assert sampled[0] == sampled[1]  # seeded sampling
    with pytest.raises(ConfigError, match="lacks"):
        generate(tmp_path / "run", "ROMEO: \u00e9t\u00e9")  # accented letters: not in Shakespeare's 65
    proc = run_cli("generate", tmp_path / "run", "--prompt", "JULIET:", "--tokens", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tokens"] == 30 and out["prompt"] == "JULIET:" and "tokens/s" in proc.stderr


def test_bad_language_model_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not divisible by model.n_head"):
        _config("model.n_embd=30", "model.n_head=4")
    with pytest.raises(ConfigError, match="does not divide train.steps"):
        _config("eval.every=15")
    with pytest.raises(ConfigError, match="trains model.name=gpt"):
        load_config(ROOT / "examples/seed_mlp.yaml", ["model.name=gpt"])
    with pytest.raises(ConfigError, match="needs data.vocab_size"):
        _config("data.tokenizer=bpe")
    proc = run_cli("cv", "-c", ROOT / "examples/shakespeare_char.yaml", "--folds", "2")
    assert proc.returncode == 2 and "does not fold a text stream" in proc.stderr and "Traceback" not in proc.stderr
    # A context longer than the val split (1% of 1.1 MB: 11,153 characters).
    with pytest.raises(DataError, match="too few for one window"):
        train(_config("data.val_fraction=0.00001", "model.block_size=64"), out=tmp_path / "a")
    missing = tmp_path / "nothing.txt"
    with pytest.raises(DataError, match="not found"):
        train(_config("data.name=text", f"data.path={missing}"), out=tmp_path / "b")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("First Citizen: caf\u00e9\n".encode("latin-1") * 50)
    with pytest.raises(DataError, match="latin1.txt") as err:
        train(_config("data.name=text", f"data.path={bad}"), out=tmp_path / "c")
    assert "offset 18" in str(err.value)  # 'First Citizen: caf' is 18 bytes; the 0xe9 comes next


def test_accumulate_4_at_batch_8_equals_batch_32(tmp_path, one_thread):
    """The same 32 windows per step, as one batch or as 4 accumulated micro-batches of 8.

    Only the order of the float sums differs (the loss mean over 32 x 32 tokens and the gradient
    sums: one reduction or four partial ones). In float64 each such sum is exact to about
    n * 2^-53 relative (n <= 1024 terms: 1e-13); 5 steps of SGD with momentum 0.9 and lr 0.1 carry
    it to the weights with a gain of at most sum(0.9^k) * lr * steps = 5 (the weights stay O(1)),
    so |dw| <= 1e-12 leaves a factor 100 above that.
    """
    common = ["train.steps=5", "eval.every=5", "optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9",
              "schedule.name=constant", "schedule.warmup_steps=null", "model.dropout=0", "train.dtype=float64"]
    whole = train(_config(*common, "train.batch_size=32"), out=tmp_path / "whole")
    parts = train(_config(*common, "train.batch_size=8", "train.accumulate=4"), out=tmp_path / "parts")
    for a, b in zip(whole.model.parameters(), parts.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert whole.history[0]["tokens"] == parts.history[0]["tokens"] == 5 * 32 * 32
    assert math.isclose(whole.history[0]["train_loss"], parts.history[0]["train_loss"], rel_tol=1e-12)


@pytest.mark.parametrize("tokenizer", ["bpe", "byte"])
def test_bpe_on_a_folder_and_byte_runs_train_and_generate(tokenizer, tmp_path, one_thread):
    """Real text: the first 200,000 characters of Tiny Shakespeare as three .txt files in a folder."""
    text = (ROOT / "trainlab/data/tinyshakespeare.txt").read_text()[:200_000]
    folder = tmp_path / "plays"
    folder.mkdir()
    for i, start in enumerate(range(0, len(text), 70_000)):
        (folder / f"part{i}.txt").write_text(text[start:start + 70_000])
    extra = ["data.vocab_size=320"] if tokenizer == "bpe" else []
    cfg = _config("data.name=text", f"data.path={folder}", f"data.tokenizer={tokenizer}", *extra,
                  "data.test_fraction=0.05")
    result = train(cfg, out=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert saved["kind"] == tokenizer
    vocab = 320 if tokenizer == "bpe" else 256
    row = result.history[-1]
    # Bits per byte: the loss in bits times tokens per byte (BPE merges make that ratio < 1).
    assert "val_bits_per_byte" in row and row["val_loss"] < math.log(vocab)
    assert set(result.metrics) == {"train", "val", "test"}
    out = generate(tmp_path / "run", "KING HENRY:", tokens=20, temperature=0)
    assert out["tokens"] == 20 and isinstance(out["text"], str)


def test_evaluate_a_language_model_run_writes_metrics_samples_and_report(tmp_path, one_thread):
    train(_config(), out=tmp_path / "run")
    proc = run_cli("evaluate", tmp_path / "run", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["split"] == "val" and result["task"] == "language_model"  # no test part: val
    # Every non-overlapping window of the val split, at most eval.limit=64 of them, 32 tokens each.
    assert result["n_tokens"] == 64 * 32
    assert math.isclose(result["perplexity"], math.exp(result["loss"]), rel_tol=1e-12)
    assert [s["prompt"] for s in result["samples"]] == ["\n", "ROMEO:"] and all(s["text"] for s in result["samples"])
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Generated text" in page and "perplexity" in page and "ROMEO:" in page
    from trainlab.predict import predict  # predict classifies: it points a language model's user to generate
    with pytest.raises(ConfigError, match="is a language model: predict classifies .* trainlab generate"):
        predict(tmp_path / "run", tmp_path / "run" / "config.yaml")


def test_sweep_size_on_a_gpt_fits_a_scaling_law(tmp_path, one_thread):
    from trainlab.compare import sweep_size
    cfg = _config("train.steps=30", "eval.every=30", "model.n_head=2")
    sweep = sweep_size(cfg, widths=[16, 32], depths=[1, 2], out=tmp_path / "sweep")
    assert len(sweep["points"]) == 4 and sweep["metric"] == "loss"
    params = [p["params"] for p in sweep["points"]]
    assert params == sorted(params) and len(set(params)) == 4
    fit = sweep["fit"]
    assert set(fit) >= {"a", "alpha", "c", "rms_residual"} and 0 <= fit["alpha"] <= 5
    # Least squares over a family that holds the constant (a = 0): no worse than the mean's spread.
    losses = [p["val"] for p in sweep["points"]]
    spread = (sum((v - sum(losses) / 4) ** 2 for v in losses) / 4) ** 0.5
    assert fit["rms_residual"] <= spread * (1 + 1e-6)
    assert (tmp_path / "sweep" / "capacity.png").stat().st_size > 1000
    assert "scaling fit" in (tmp_path / "sweep" / "report.html").read_text()


def test_lr_find_compare_and_search_work_on_a_gpt_config(tmp_path, one_thread):
    from trainlab.compare import compare
    from trainlab.lrfind import lr_find
    from trainlab.search import search
    cfg = _config("train.steps=20", "eval.every=20", "model.n_layer=1", "model.dropout=0.0")
    found = lr_find(cfg, min_lr=1e-5, max_lr=1.0, steps=25, out=tmp_path / "lr")
    # 25 steps from 1e-5 to 1: the suggestion lies in the range swept, the loss started near chance.
    assert 1e-5 <= found["suggested_lr"] <= 1.0 and abs(found["loss"][0] - math.log(65)) < 0.5
    cmp = compare(cfg, {"optim.lr": [1e-3, 3e-3]}, seeds=2, out=tmp_path / "cmp")
    assert cmp["metric"] == "val.loss" and len(cmp["settings"]) == 2
    assert all("val.perplexity" in s["metrics"] for s in cmp["settings"])
    best = search(cfg, {"optim.lr": {"loguniform": [1e-3, 1e-2], "grid": 2}}, metric="val.bits_per_char",
                  out=tmp_path / "search", quiet=True)
    assert best["trials"] == 2 and best["best"]["value"] > 0
