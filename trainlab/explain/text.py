"""Language-model runs (model.name=gpt): token attributions for the next token of a prompt, and attention maps.

Shapes: N prompts, T tokens each, C = n_embd, L layers, nh heads, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..evaluate import TrainedRun
from .attribute import target_outputs
from .methods import IG_STEPS, check_method

WINDOW = 48          # tokens per prompt cut from the split: a line or two of text, a readable T x T map
INTERNAL_BATCH = 256  # interpolated prompts per forward + backward pass inside Captum


def baseline_token(tokenizer) -> int:
    """The id standing for "no information": a space when it is one token (Tiny Shakespeare's most
    common character), else id 0."""
    try:
        ids = tokenizer.encode(" ")
    except ConfigError:  # a char vocabulary without a space
        return 0
    return ids[0] if len(ids) == 1 else 0


def prompts(trained: TrainedRun, split: str, examples: int, prompt: Optional[str]) -> tuple[torch.Tensor, list]:
    """(N, T) int64 token ids, and the true next token id of each (None after a given prompt).

    With `prompt`: its last block_size tokens (an unknown character is the tokenizer's ConfigError).
    Otherwise `examples` windows of min(WINDOW, block_size) tokens evenly spaced over the split.
    """
    block = trained.model.config.block_size
    if prompt is not None:
        ids = trained.splits.extra["tokenizer"].encode(prompt)[-block:]
        if not ids:
            raise ConfigError("--prompt is empty: give at least one character of text to continue.")
        return torch.tensor([ids], dtype=torch.long), [None]
    stream = getattr(trained.splits, split).ids                        # (n,) the split's tokens
    t = min(WINDOW, block, len(stream) - 1)
    if t < 1:
        raise ConfigError(f"The {split} split has {len(stream)} tokens: too few for a prompt. Give --prompt TEXT.")
    starts = np.linspace(0, len(stream) - t - 1, examples).astype(np.int64)
    ids = torch.stack([stream[s:s + t] for s in starts])
    return ids, [int(stream[s + t]) for s in starts]


def _next_logits(model):
    """ids (B, T) -> the next token's logits (B, V): the function whose output is attributed."""
    return lambda ids: model(ids)[:, -1, :]


def token_attributions(model, ids: torch.Tensor, target: torch.Tensor, method: str, base_id: int,
                       steps: int = IG_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(N, T) attribution of each prompt token to its next token's logit `target`, and (N,) the
    integrated-gradients completeness gap (NaN for the other methods).

    Attributions are taken on the token embeddings (the wte layer's output, (N, T, C)) and summed
    over C: integrated gradients from the embedding of the baseline token at every position
    (positions stay as they are), saliency as the L2 norm of the gradient there, occlusion as the
    drop of the logit when one token is replaced by the baseline token.
    """
    from captum.attr import FeatureAblation, LayerGradientXActivation, LayerIntegratedGradients

    check_method(method)
    forward = _next_logits(model)
    base = torch.full_like(ids, base_id)
    if method == "integrated_gradients":
        attr, delta = LayerIntegratedGradients(forward, model.wte).attribute(
            ids, baselines=base, target=target, n_steps=steps, method="riemann_middle",
            internal_batch_size=max(INTERNAL_BATCH, len(ids)), return_convergence_delta=True)
        return attr.sum(-1).double().detach().cpu().numpy(), delta.double().detach().cpu().numpy()
    nan = np.full(len(ids), np.nan)
    if method == "saliency":
        grad = LayerGradientXActivation(forward, model.wte, multiply_by_inputs=False).attribute(ids, target=target)
        return grad.norm(dim=-1).double().detach().cpu().numpy(), nan     # (N, T, C) -> (N, T)
    with torch.no_grad():
        attr = FeatureAblation(forward).attribute(ids, baselines=base_id, target=target)
    return attr.double().cpu().numpy(), nan


@torch.no_grad()
def attention_maps(model, ids: torch.Tensor) -> np.ndarray:
    """(N, L, nh, T, T) attention weights: row i is how query token i spreads over keys 0..i.

    The model calls scaled_dot_product_attention, which returns no weights, so they are rebuilt
    from each layer's q and k (caught at c_attn's output): softmax(q k^T / sqrt(hs)) under the
    causal mask, after the rotary embedding when the model uses one (gpt.apply_rope).
    """
    from ..gpt import apply_rope

    cfg = model.config
    n, t = ids.shape
    hs = cfg.n_embd // cfg.n_head
    caught: list[torch.Tensor] = []
    hooks = [b.attn.c_attn.register_forward_hook(lambda m, i, out: caught.append(out)) for b in model.blocks]
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
    maps = []
    for qkv in caught:                                                       # (N, T, 3C) per layer
        q, k, _ = qkv.split(cfg.n_embd, dim=2)
        q, k = (z.view(n, t, cfg.n_head, hs).transpose(1, 2).double() for z in (q, k))  # (N, nh, T, hs)
        if cfg.rope:
            q, k = (apply_rope(z, model.rope_cos[:t], model.rope_sin[:t]) for z in (q, k))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)                     # (N, nh, T, T)
        maps.append(scores.masked_fill(~causal, float("-inf")).softmax(-1))
    return torch.stack(maps, dim=1).float().cpu().numpy()


def explain_text(trained: TrainedRun, split: str, method: str, examples: int, steps: int,
                 prompt: Optional[str] = None) -> dict:
    """attributions.npz's arrays for a language-model run (see trainlab.explain's docstring)."""
    t = trained
    tokenizer = t.splits.extra["tokenizer"]
    ids, true_next = prompts(t, split, examples, prompt)
    ids = ids.to(t.device)
    with torch.no_grad():
        logits = t.model(ids)[:, -1, :].double().cpu()                        # (N, V)
    proba = logits.softmax(-1)
    target = proba.argmax(-1)                                                # the model's next token
    base_id = baseline_token(tokenizer)
    base = torch.full_like(ids, base_id)
    attr, delta = token_attributions(t.model, ids, target.to(t.device), method, base_id, steps)

    def decode(i) -> str:
        return tokenizer.decode([int(i)])

    return {"ids": ids.cpu().numpy(), "tokens": np.asarray([[decode(i) for i in row] for row in ids.tolist()]),
            "attributions": attr, "delta": delta, "attention": attention_maps(t.model, ids),
            "output": logits.gather(1, target[:, None])[:, 0].numpy(),
            "baseline_output": target_outputs(_next_logits(t.model), base, target),
            "next_id": target.numpy(), "next_token": np.asarray([decode(i) for i in target.tolist()]),
            "next_probability": proba.gather(1, target[:, None])[:, 0].numpy(),
            "true_next": np.asarray(["" if i is None else decode(i) for i in true_next]),
            "baseline_token": np.asarray(decode(base_id))}


def _shown(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "·") or "∅"


def plot_tokens(arrays: dict, signed: bool):
    """Each prompt's tokens in boxes coloured by attribution (red: towards the predicted next token)."""
    import matplotlib
    from matplotlib import colors

    from ..report.plots import _figure

    tokens, attr = arrays["tokens"], arrays["attributions"]
    n, t = attr.shape
    fig = _figure((max(6.0, 0.19 * t + 2.5), 0.55 * n + 0.6), layout=None)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.set_xlim(0, t + 9)
    ax.set_ylim(n, -0.5)
    ax.axis("off")
    cmap = matplotlib.colormaps["bwr" if signed else "Reds"]
    for r in range(n):
        top = float(np.abs(attr[r]).max()) or 1.0
        norm = colors.Normalize(-top, top) if signed else colors.Normalize(0, top)
        for j in range(t):
            ax.text(j + 0.5, r, _shown(str(tokens[r, j])), ha="center", va="center", fontsize=7, family="monospace",
                    bbox={"boxstyle": "square,pad=0.15", "facecolor": cmap(norm(attr[r, j])), "edgecolor": "none"})
        nxt = _shown(str(arrays["next_token"][r]))
        true = str(arrays["true_next"][r])
        ax.text(t + 0.8, r, f"→ {nxt} ({arrays['next_probability'][r]:.2f})" +
                (f", true {_shown(true)}" if true else ""), va="center", fontsize=7, family="monospace")
    return fig


def plot_attention(arrays: dict, example: int = 0):
    """The attention maps of one prompt: one panel per layer (rows) and head (columns)."""
    from ..report.plots import _figure

    att = arrays["attention"][example]                                       # (L, nh, T, T)
    layers, heads, t, _ = att.shape
    labels = [_shown(str(s)) for s in arrays["tokens"][example]]
    fig = _figure((2.3 * heads + 0.6, 2.3 * layers + 0.4))
    axes = fig.subplots(layers, heads, squeeze=False)
    for li in range(layers):
        for hi in range(heads):
            ax = axes[li, hi]
            ax.imshow(att[li, hi], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {li} head {hi}", fontsize=7)
            if t <= 24:
                ax.set_xticks(range(t), labels, fontsize=5, family="monospace")
                ax.set_yticks(range(t), labels, fontsize=5, family="monospace")
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("attention: query token (rows) over key tokens (columns)", fontsize=8)
    return fig
