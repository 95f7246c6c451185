"""GPT: a decoder-only transformer language model in one file (after karpathy/nanoGPT's model.py).

Shapes: B batch, T tokens in the input, S tokens attended to (T, or cached + T), C = n_embd,
nh = n_head, hs = C // nh (head size), V = vocab_size, L = n_layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError


@dataclass
class GPTConfig:
    vocab_size: int = 65        # tokens (the tokenizer's vocab_size; 65 = Tiny Shakespeare's chars)
    block_size: int = 256       # context length in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384           # width; a multiple of n_head
    dropout: float = 0.0        # probability, on embeddings, attention weights and residual branches
    bias: bool = True           # biases in Linear layers and LayerNorms, as GPT-2 (False: a bit faster)
    rope: bool = False          # rotary position embeddings (RoFormer) instead of learned positions
    rope_base: float = 10000.0  # RoPE: wavelength of the slowest-rotating channel pair, in tokens

    def __post_init__(self):
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be >= 1.")
        if self.n_embd % self.n_head:
            near = max(self.n_head, round(self.n_embd / self.n_head) * self.n_head)
            raise ConfigError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}: each head "
                f"gets n_embd / n_head channels. Use e.g. model.n_embd={near}.")
        if self.rope and (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"model.rope=true rotates channel pairs: the head size n_embd / n_head = "
                              f"{self.n_embd // self.n_head} must be even.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1).")


class KVCache:
    """Keys and values of the tokens seen so far, one pair per layer, each (B, nh, S, hs).

    Generation feeds one new token per step and attends to the cached rest: no recomputation.
    """

    def __init__(self, n_layer: int):
        self.kv: list[Optional[tuple[torch.Tensor, torch.Tensor]]] = [None] * n_layer

    def __len__(self) -> int:
        return 0 if self.kv[0] is None else self.kv[0][0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kv[layer] is not None:
            k = torch.cat([self.kv[layer][0], k], dim=2)  # (B, nh, S, hs)
            v = torch.cat([self.kv[layer][1], v], dim=2)
        self.kv[layer] = (k, v)
        return k, v


def rope_tables(head_size: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (length, hs/2): position p turns pair i by p / base^(2i/hs)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + hs/2) of x (B, nh, T, hs) by angles of cos/sin (T, hs/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v of all heads at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.dropout, self.layer = cfg.n_head, cfg.dropout, layer

    def forward(self, x: torch.Tensor, rope=None, cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)                                      # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)                                    # (B, nh, S, hs)
        S = k.shape[2]
        # is_causal's mask is aligned top-left (query i sees keys 0..i), right only when S == T. With
        # cached keys the queries are the last T positions: one new token sees every key (no mask);
        # a longer chunk needs the mask shifted by the S - T cached tokens.
        mask = None
        if T > 1 and S > T:
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=(S == T and T > 1),
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                              # heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x)); the residual stream is never normalised."""

    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, rope=None, cache: Optional[KVCache] = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V); the loss is the caller's (cross-entropy).

    >>> model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=2, n_embd=64))
    >>> model(torch.zeros(8, 64, dtype=torch.long)).shape     # torch.Size([8, 64, 65])
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)                            # token embeddings
        self.wpe = None if cfg.rope else nn.Embedding(cfg.block_size, cfg.n_embd)      # learned positions
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one (V, C) matrix embeds and un-embeds
        if cfg.rope:  # buffers (they follow .to(device)), not saved: they are a function of the config
            cos, sin = rope_tables(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)                   # (block_size, hs/2)
            self.register_buffer("rope_sin", sin, persistent=False)
        # GPT-2 init: N(0, 0.02) weights, zero biases; each residual branch's output projection is
        # scaled by 1/sqrt(2L): 2L branches add to the residual stream, whose variance then stays put.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: Optional[KVCache] = None) -> torch.Tensor:
        B, T = idx.shape
        start = 0 if cache is None else len(cache)  # position of idx[:, 0] in the sequence
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} tokens exceed block_size={self.config.block_size}: crop the input.")
        x = self.wte(idx)                                                          # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))     # + (T, C)
        rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T]) if self.config.rope else None
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope, cache)
        return self.lm_head(self.ln_f(x))                                          # (B, T, V)


def _next_token(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Pick one token per row of logits (B, V) -> (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)                    # greedy
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]        # (B, 1) k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # Nucleus: keep the most likely tokens until their probability reaches top_p (at least one).
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        outside = probs.cumsum(dim=-1) - probs >= top_p                # mass before this token is enough
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, top_p: Optional[float] = None,
             generator: Optional[torch.Generator] = None, use_cache: bool = True) -> torch.Tensor:
    """Continue each row of idx (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens).

    temperature=0 is greedy; otherwise sample from softmax(logits / temperature), optionally only
    among the top_k tokens and/or the top_p nucleus, drawing from `generator` (on idx's device).
    use_cache=True feeds one token per step against a KVCache (time linear in tokens generated).
    Without a cache every step re-reads the last block_size tokens (nanoGPT); with one, the two
    give the same tokens while the sequence fits block_size. Past it, the cache is rebuilt from
    the last block_size // 2 tokens whenever it fills, so steps stay cheap on average.
    >>> out = generate(model, torch.tensor([tok.encode("ROMEO:")]), 200, temperature=0.8, top_k=40)
    """
    if max_new_tokens < 0 or temperature < 0:
        raise ConfigError(f"max_new_tokens={max_new_tokens} and temperature={temperature} must be >= 0.")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k={top_k} must be >= 1.")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p={top_p} must be in (0, 1].")
    if idx.shape[1] < 1:
        raise ConfigError("generate needs a prompt of at least one token.")
    block, was_training = model.config.block_size, model.training
    model.eval()
    cache = None
    try:
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = model(idx[:, -block:])                          # (B, <= block, V)
            elif cache is None or len(cache) == block:
                # First step: the prompt's last block_size tokens. A full cache: rebuild it from the
                # last half block (learned positions cannot slide), then go on one token at a time.
                keep = block if cache is None else max(1, block // 2)
                cache = KVCache(model.config.n_layer)
                logits = model(idx[:, -keep:], cache)
            else:
                logits = model(idx[:, -1:], cache)      # the newest token only, (B, 1, V)
            nxt = _next_token(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
    finally:
        model.train(was_training)
    return idx


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups by rank: matrices and embeddings (>= 2-D) decay; biases, norms do not.

    >>> torch.optim.AdamW(decay_groups(model, 0.1), lr=1e-3)
    """
    params = [p for p in model.parameters() if p.requires_grad]  # a tied weight appears once
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, a tied weight counted once: 12·L·C² + 13·L·C + V·C + block_size·C + 2C
    for GPT with biases and learned positions (see tests/test_gpt.py for the derivation)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
