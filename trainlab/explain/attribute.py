"""Captum's three attribution methods behind one call, for models that map a float batch to (B, K) outputs.

    attributions, delta = attribute(model, x, target, "integrated_gradients", baseline)

f, the function attributed, is the model's output for the `target` class before the softmax (the
logit), or the single output of a regression model (in standardised target units). Logits, not
probabilities: a confident example's probability is saturated near 1, so its attributions and
f(x) - f(baseline) shrink towards zero and say little; the logit keeps the evidence additive.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from .methods import IG_STEPS, check_method

# Scaled inputs per forward + backward pass inside Captum: bounded memory whatever the steps.
INTERNAL_BATCH = 512


def occlusion_patch(side: int) -> int:
    """Occlusion's square patch on an image of `side` pixels (28 -> 4, 32 -> 4, 64 -> 9); stride half that."""
    return max(2, side // 7)


def attribute(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor,
              method: str, baseline: torch.Tensor,
              steps: int = IG_STEPS) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Attributions of forward(x)[i, target[i]] to every input value, shaped like x, and for
    integrated gradients Captum's completeness gap sum(attr) - (f(x) - f(baseline)) per example.

    x: (B, C, H, W) images or (B, F) features, already normalised as the model reads them;
    baseline: the input standing for "nothing", broadcastable to x ((1, C, H, W) or (1, F));
    target: (B,) int64 output indices. Saliency gives |gradient| (unsigned); occlusion the drop of
    f when a patch (images) or one feature (tables) is set to the baseline.
    """
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    check_method(method)
    x = x.detach()
    baseline = baseline.to(x).expand_as(x).contiguous()
    target = target.to(x.device)
    if method == "integrated_gradients":
        attr, delta = IntegratedGradients(forward).attribute(
            x, baselines=baseline, target=target, n_steps=steps, method="riemann_middle",
            internal_batch_size=max(INTERNAL_BATCH, len(x)), return_convergence_delta=True)
        return attr.detach(), delta.detach()
    if method == "saliency":
        return Saliency(forward).attribute(x.clone().requires_grad_(), target=target, abs=True).detach(), None
    if x.dim() == 4:  # (B, C, H, W): a patch across all channels slides over the image
        c, side = x.shape[1], occlusion_patch(x.shape[-1])
        window, strides = (c, side, side), (c, max(1, side // 2), max(1, side // 2))
    else:             # (B, F): one feature at a time
        window, strides = (1,), (1,)
    with torch.no_grad():
        attr = Occlusion(forward).attribute(x, sliding_window_shapes=window, strides=strides, baselines=baseline,
                                            target=target, perturbations_per_eval=16)
    return attr.detach(), None


def output_index(predicted: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """The model output to attribute for each predicted class: the class itself, or output 0 when
    the model has a single output (regression, or a binary model's positive-class logit)."""
    predicted = torch.as_tensor(predicted, dtype=torch.long)
    return torch.zeros_like(predicted) if n_outputs == 1 else predicted


def target_outputs(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   target: torch.Tensor) -> np.ndarray:
    """(B,) float64 f(x[i]) = forward(x)[i, target[i]]: what the attributions of x[i] explain."""
    out = outputs(forward, x)
    return out.gather(1, torch.as_tensor(target, dtype=torch.long).cpu()[:, None])[:, 0].numpy()


def outputs(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """model(x) in batches without gradients: (B, K) float64 outputs on the CPU."""
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).double().cpu() for i in range(0, len(x), batch)])
