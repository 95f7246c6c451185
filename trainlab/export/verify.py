"""The check an export passes before it is written: the loaded file against the trained model.

The reference is what `trainlab predict` computes from the same raw inputs (predict.model_outputs):
probabilities, or values in target units; for a language model, softmax of the logits.
"""

from __future__ import annotations

import copy

import torch

from ..errors import TrainlabError
from ..evaluate import TrainedRun
from .formats import Runner
from .graph import Exportable

U = 2.0 ** -24  # unit roundoff of float32


class ExportMismatch(TrainlabError):
    """The exported file disagrees with the trained model beyond float32 rounding; nothing was written."""

    exit_code = 1


def bound(torch_error: float, magnitude: float) -> float:
    """Largest difference allowed between the file's outputs and torch's, from float32 rounding.

    Both compute the same operations, layer after layer, in float32; each differs from exact
    arithmetic by the rounding it accumulates through the network's depth. Torch's part is measured
    on these very inputs: `torch_error`, its largest distance from a float64 copy of the model (whose
    2^-53 rounding is 2^29 times finer, so it stands for the exact result). The file's runtime rounds
    the same products and sums, only in another order or fused (blocked GEMMs, FMA, BatchNorm folded
    into the convolution): per dot product of n terms both errors are random walks of size
    ~sqrt(n) U sum|terms|, and reordering changes which walk, not its size. Allowing the runtime up to
    3x torch's error gives |file - torch| <= 3e + e = 4e. The floor 16 U * magnitude (probabilities:
    1) covers inputs where torch happens to round exactly (e ~ 0) yet the runtime does not: one
    float32 rounding of a logit z moves a probability by <= p(1-p) 2U|z| < 8U for |z| < 16.
    """
    return 4.0 * torch_error + 16.0 * U * magnitude


def _chunks(trained: TrainedRun, n: int) -> int:
    """Examples per comparison: a batch of language-model probabilities is (B, T, V) float64."""
    if trained.splits.task != "language_model":
        return max(1, trained.cfg.eval.batch_size)
    per_example = trained.cfg.model.block_size * trained.splits.num_classes
    return max(1, min(n, (1 << 22) // per_example))  # <= 32 MB per float64 array


@torch.no_grad()
def compare(trained: TrainedRun, module: Exportable, run: Runner, x: torch.Tensor) -> dict:
    """Largest differences of the file's outputs from the trained model's on raw inputs x (n, ...)."""
    from ..predict import model_outputs

    lm = trained.splits.task == "language_model"
    model64 = copy.deepcopy(module.model).double()  # the same weights, rounded 2^29 times finer
    worst = {"difference": 0.0, "torch_error": 0.0, "magnitude": 0.0, "logit_difference": 0.0}
    step = _chunks(trained, len(x))
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        got = run(xb)
        if lm:
            logits = trained.model(xb.to(trained.device)).cpu()                # (B, T, V)
            worst["logit_difference"] = max(worst["logit_difference"], float((got - logits).abs().max()))
            ref, ref64, got = (z.double().softmax(-1) for z in (logits, model64(xb), got))
        else:
            ref = torch.from_numpy(model_outputs(trained, xb))                 # what predict gives
            ref64 = torch.from_numpy(model_outputs(trained, xb, model=model64, dtype=torch.float64))
        got = got.double()
        if got.shape != ref.shape:
            raise ExportMismatch(f"The exported model gives outputs of shape {tuple(got.shape)} for a batch of "
                                 f"{len(xb)}, the trained model {tuple(ref.shape)}. Nothing was written.")
        diff = float((got - ref).abs().max())
        worst["difference"] = max(worst["difference"], diff if diff == diff else float("inf"))  # NaN fails
        worst["torch_error"] = max(worst["torch_error"], float((ref - ref64).abs().max()))
        worst["magnitude"] = max(worst["magnitude"], float(ref.abs().max()))
    magnitude = worst["magnitude"] if trained.splits.task == "regression" else 1.0
    worst["bound"] = bound(worst["torch_error"], magnitude)
    if not lm:
        del worst["logit_difference"]
    del worst["magnitude"]
    return worst
