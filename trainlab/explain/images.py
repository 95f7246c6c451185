"""Image runs: attribution maps of each class's most confident correct and most confident wrong examples."""

from __future__ import annotations

import numpy as np
import torch

from ..data import ArraySplit, FileSplit
from ..data.loader import Batches
from ..evaluate import TrainedRun, _outputs
from .attribute import attribute, output_index, target_outputs

MAX_CLASSES_SHOWN = 20  # rows of the heat-map figure; every class is still in attributions.npz


def select_examples(y: np.ndarray, proba: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of, for each class c in order, the `per_class` most confident correct examples of
    true class c, then its `per_class` most confidently wrong ones; and whether each is correct.

    y: (n,) true classes, proba: (n, K). A class with fewer such examples gives fewer (maybe none).
    """
    pred, conf = proba.argmax(1), proba.max(1)
    index, correct = [], []
    for c in range(proba.shape[1]):
        for right in (True, False):
            pool = np.flatnonzero((y == c) & ((pred == c) if right else (pred != c)))
            chosen = pool[np.argsort(-conf[pool], kind="stable")][:per_class]
            index += chosen.tolist()
            correct += [right] * len(chosen)
    return np.asarray(index, dtype=np.int64), np.asarray(correct, dtype=bool)


def raw_images(trained: TrainedRun, split: str, index: np.ndarray) -> torch.Tensor:
    """The examples at `index` as stored: (n, C, H, W) uint8 (float for scikit-learn's digits)."""
    s = getattr(trained.splits, split)
    if isinstance(s, FileSplit):
        from ..data.folder import read_image
        size = trained.splits.input_shape[-1]
        if not len(index):
            return torch.zeros((0, *trained.splits.input_shape), dtype=torch.uint8)
        return torch.stack([read_image(s.files[i], size) for i in index])
    return s.x[torch.as_tensor(index, dtype=torch.long)]


def model_inputs(trained: TrainedRun, raw: torch.Tensor) -> torch.Tensor:
    """Raw images (n, C, H, W) -> the normalised float inputs the model reads, on its device.

    Through the loader's own Batches, so the normalisation is the one training used.
    """
    dummy = torch.zeros(len(raw), dtype=torch.int64)
    batches = Batches(ArraySplit(raw, dummy), trained.splits, max(1, len(raw)), trained.device, trained.dtype)
    return torch.cat([x for x, _ in batches.epoch()]) if len(raw) else raw.to(trained.device, trained.dtype)


def baseline(trained: TrainedRun) -> torch.Tensor:
    """A black image (raw value 0 in every channel) as the model reads it: (1, C, H, W)."""
    s = trained.splits.train
    dtype = torch.uint8 if isinstance(s, FileSplit) else s.x.dtype
    return model_inputs(trained, torch.zeros((1, *trained.splits.input_shape), dtype=dtype))


def explain_images(trained: TrainedRun, split: str, method: str, per_class: int, steps: int) -> dict:
    """attributions.npz's arrays for an image run (see trainlab.explain's docstring)."""
    y, proba = _outputs(trained, split)  # (n,) and (n, K) over the split, eval.limit respected
    index, correct = select_examples(y, proba, per_class)
    raw = raw_images(trained, split, index)
    x = model_inputs(trained, raw)                          # (m, C, H, W) normalised
    predicted = proba[index].argmax(1) if len(index) else np.zeros(0, np.int64)
    # Explain what the model decided: the predicted class's logit (output 0 of a one-logit model).
    n_outputs = 1 if trained.loss_name == "bce_with_logits" else proba.shape[1]
    target = output_index(torch.as_tensor(predicted), n_outputs)
    base = baseline(trained)                                # (1, C, H, W)
    if len(index):
        attr, delta = attribute(trained.model, x, target, method, base, steps)
    else:
        attr, delta = torch.zeros_like(x), None
    return {"images": raw.numpy(), "attributions": attr.float().cpu().numpy(), "index": index,
            "true": y[index].astype(np.int64), "predicted": predicted.astype(np.int64),
            "confidence": proba[index].max(1).astype(np.float64) if len(index) else np.zeros(0),
            "correct": correct, "output": target_outputs(trained.model, x, target),
            "baseline_output": target_outputs(trained.model, base.expand_as(x), target),
            "delta": _delta(delta, len(index))}


def _delta(delta, n: int) -> np.ndarray:
    """(n,) float64 completeness gaps, NaN for methods without one."""
    return np.full(n, np.nan) if delta is None else delta.double().cpu().numpy().reshape(n)


def plot_heatmaps(arrays: dict, classes: list[str], per_class: int, signed: bool):
    """One row per class (at most MAX_CLASSES_SHOWN): its correct examples then its wrong ones, each
    the image in grey with the attribution over it (red for the predicted class, blue against)."""
    from ..report.plots import _figure

    shown = classes[:MAX_CLASSES_SHOWN]
    cols = 2 * per_class
    # A fixed grid, not constrained layout: solving the layout of 20+ small axes took ~1 s.
    fig = _figure((1.45 * cols + 1.2, 1.5 * len(shown) + 0.5), layout=None)
    axes = fig.subplots(len(shown), cols, squeeze=False)
    fig.subplots_adjust(left=0.9 / (1.45 * cols + 1.2), right=0.98, top=1 - 0.3 / (1.5 * len(shown) + 0.5),
                        bottom=0.2 / (1.5 * len(shown) + 0.5), wspace=0.15, hspace=0.35)
    true, correct = arrays["true"], arrays["correct"]
    for r, name in enumerate(shown):
        for kind, right in enumerate((True, False)):
            picks = np.flatnonzero((true == r) & (correct == right))
            for k in range(per_class):
                ax = axes[r, kind * per_class + k]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title("correct" if right else "wrong", fontsize=8)
                if k == 0 and kind == 0:
                    ax.set_ylabel(name, fontsize=8)
                if k >= len(picks):
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=7, color="#999",
                            transform=ax.transAxes)
                    continue
                i = picks[k]
                _overlay(ax, arrays["images"][i], arrays["attributions"][i], signed)
                ax.set_xlabel(f"→ {classes[arrays['predicted'][i]]} ({arrays['confidence'][i]:.2f})", fontsize=7)
    fig.text(0.5, 0.004, "red: for the predicted class (→), blue: against" if signed else
             "red: |gradient| of the predicted class (→)", ha="center", va="bottom", fontsize=7)
    return fig


def _overlay(ax, image: np.ndarray, attr: np.ndarray, signed: bool) -> None:
    """image (C, H, W) raw, attr (C, H, W): channels summed, scaled to its 99th percentile."""
    img = image.astype(np.float64)
    img = img / (img.max() or 1.0)
    ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0).clip(0, 1), cmap="gray",
              interpolation="nearest")
    heat = attr.sum(0)                                                        # (H, W)
    top = float(np.percentile(np.abs(heat), 99)) or 1.0
    # Opacity follows |attribution|: pixels that barely matter leave the image visible under them.
    alpha = 0.85 * np.clip(np.abs(heat) / top, 0.0, 1.0)
    if signed:
        ax.imshow(heat, cmap="bwr", vmin=-top, vmax=top, alpha=alpha, interpolation="nearest")
    else:
        ax.imshow(heat, cmap="Reds", vmin=0, vmax=top, alpha=alpha, interpolation="nearest")
