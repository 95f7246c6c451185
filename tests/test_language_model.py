"""A GPT trained by train() on Tiny Shakespeare: step budgets, metrics rows, tokenizer.json, resume,
generation, and the bad input a language-model config can hold."""

import json
import math
import os
import signal

import pytest
import torch

from trainlab import checkpoint
from trainlab.config import load_config
from trainlab.errors import ConfigError, DataError, Interrupted
from trainlab.generate import generate
from trainlab.train import train

from conftest import ROOT, run_cli

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

    def interrupt(period, step):
        if (period, step) == (3, 4):
            os.kill(os.getpid(), signal.SIGINT)

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
