"""generate: text sampled from a trained language-model run, one token at a time against a key-value cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch

from . import checkpoint
from .config import load_config
from .errors import ConfigError, DataError
from .runs import RunDir


def generate(run_dir: str | Path, prompt: str = "\n", *, tokens: int = 500, temperature: float = 0.8,
             top_k: Optional[int] = 200, top_p: Optional[float] = None, seed: int = 0,
             use_cache: bool = True) -> dict:
    """Continue `prompt` by `tokens` tokens with the run's best weights (last.pt when it has none).

    temperature 0 is greedy decoding; otherwise tokens are drawn from softmax(logits / temperature),
    among the top_k most likely and/or the top_p nucleus, from a generator seeded with `seed`.
    >>> out = generate("runs/shakespeare_char-...", "ROMEO:", tokens=200)
    >>> print(out["text"]); out["tokens_per_second"]
    """
    from .data.text import Tokenizer
    from .gpt import generate as sample
    from .models import build_model

    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise ConfigError(f"'{run_dir}' is not a run directory: it has no config.yaml. Give a folder "
                          "`trainlab train` wrote for a language model (model.name=gpt).")
    cfg = load_config(run.config)
    if cfg.model.name != "gpt":
        raise ConfigError(f"'{run_dir}' trained model.name={cfg.model.name}; generate needs a language-model "
                          "run (model.name=gpt, data.name=text or tinyshakespeare).")
    if tokens < 0:
        raise ConfigError(f"--tokens {tokens} must be >= 0.")
    if not run.tokenizer.is_file():
        raise DataError(f"'{run.tokenizer}' is missing: the run's tokenizer is needed to read the prompt and "
                        "write the text. Train the run again, or restore the file.")
    tokenizer = Tokenizer.from_json(run.tokenizer.read_text())
    weights = run.best if run.best.is_file() else run.last
    model = build_model(cfg.model, (cfg.model.block_size,), tokenizer.vocab_size)
    checkpoint.load_weights(model, weights)
    prompt_ids = tokenizer.encode(prompt)  # a character the vocabulary lacks: ConfigError naming it
    if not prompt_ids:
        raise ConfigError("--prompt is empty after tokenizing: give at least one character.")
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    out = sample(model, torch.tensor([prompt_ids]), tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                 generator=generator, use_cache=use_cache)
    seconds = time.perf_counter() - start
    new_ids = out[0, len(prompt_ids):].tolist()
    return {"run_dir": str(run.path), "checkpoint": str(weights), "prompt": prompt,
            "text": tokenizer.decode(new_ids), "tokens": len(new_ids), "seconds": seconds,
            "tokens_per_second": len(new_ids) / seconds if seconds > 0 else None}
