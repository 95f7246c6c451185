"""explain(run_dir) -> dict: why a trained run decides as it does, by Captum attributions.

    >>> r = explain("runs/fashion_cnn-20261201-101500")            # integrated gradients on test
    >>> r["attributions"], r["figures"]                           # RUN/eval/attributions.npz, PNGs

The function attributed, f, is the logit of the class the model predicts (the single output of a
regression or one-logit binary model; for a language model the next token's logit); the
baseline is a black image, the training mean of every feature (0 after standardising), or a
prompt of space tokens. Integrated gradients then satisfy completeness, sum(attributions) =
f(x) - f(baseline), up to the quadrature error (methods.IG_STEPS says why it stays under 1%).

images.py (heat maps of each class's most confident correct and wrong examples), tables.py
(per-feature attributions beside scikit-learn's permutation importance), text.py (gpt runs:
token attributions and attention maps); attribute.py wraps Captum. Writes, atomically:

- ``RUN/eval/attributions.npz`` (plain arrays, no pickles): ``meta`` (a JSON string: kind, method,
  split, checkpoint, figures), ``attributions``, ``delta`` (IG's completeness gap, NaN otherwise),
  ``output`` and ``baseline_output`` (f(x) and f(baseline) of every attributed example), and
  - images: ``images`` (raw pixels, (n, C, H, W)), ``attributions`` (n, C, H, W), ``index``,
    ``true``, ``predicted``, ``confidence``, ``correct``;
  - tables: ``features`` (F,), ``mean_abs`` (F,) over the split, ``permutation_mean``,
    ``permutation_std`` (F,), and for the first rows ``attributions`` (n, F) signed, ``values``
    (in the data's units), ``index``, ``true``, ``predicted``;
  - text: ``ids``, ``tokens`` (N, T), ``attributions`` (N, T), ``attention`` (N, L, nh, T, T),
    ``next_id``, ``next_token``, ``next_probability``, ``true_next``, ``baseline_token``;
- ``RUN/eval/explain/*.png`` (the figures), then ``RUN/report.html`` with an attributions section.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np

from .methods import IG_STEPS, METHODS, check_method

__all__ = ["explain", "explain_trained", "METHODS", "IG_STEPS", "DEFAULT_EXAMPLES", "format_explanation"]

SPLITS = ("test", "val")
# --examples by kind of run: images per class and kind (correct / wrong), table rows shown signed,
# prompts cut from a text split.
DEFAULT_EXAMPLES = {"image": 1, "table": 8, "text": 4}


def explain(run_dir: str | Path, method: str = "integrated_gradients", examples: Optional[int] = None,
            split: Optional[str] = None, data_dir: Optional[str] = None, prompt: Optional[str] = None,
            steps: int = IG_STEPS, model=None, report: bool = True) -> dict:
    """Attribute a trained run's decisions on `split` ("test", default, or "val") with `method`
    (integrated_gradients, saliency or occlusion); writes RUN/eval/attributions.npz, the figures
    and report.html (module docstring) and returns a summary (what `--json` prints).

    `examples`: images per class and kind, table rows, or prompts (DEFAULT_EXAMPLES); `prompt`: a
    language model's text to continue instead of windows of the split; `model`: the nn.Module
    object a run was trained with, if it was passed to train() as one.
    """
    _check_arguments(method, split, examples, steps)  # usage before anything is loaded
    from ..evaluate import load_run

    return explain_trained(load_run(run_dir, data_dir, model), method, examples, split, prompt, steps, report)


def explain_trained(trained, method: str = "integrated_gradients", examples: Optional[int] = None,
                    split: Optional[str] = None, prompt: Optional[str] = None, steps: int = IG_STEPS,
                    report: bool = True) -> dict:
    """explain() on a run already loaded by trainlab.evaluate.load_run (its TrainedRun)."""
    from ..errors import ConfigError

    _check_arguments(method, split, examples, steps)
    splits = trained.splits
    if split is None:
        split = "test" if splits.test is not None else "val"
    if getattr(splits, split) is None:
        other = [s for s in SPLITS if getattr(splits, s) is not None]
        raise ConfigError(f"Run '{trained.run.path}' has no '{split}' split. Allowed here: "
                          f"{', '.join(other) or 'none (the run has neither a test nor a val split)'}.")
    kind = "text" if splits.task == "language_model" else "image" if splits.is_image else "table"
    if prompt is not None and kind != "text":
        raise ConfigError("--prompt is for language-model runs (model.name=gpt); this run is a "
                          f"{kind} run. Drop --prompt.")
    n = DEFAULT_EXAMPLES[kind] if examples is None else examples
    if kind == "image":
        from .images import explain_images
        arrays = explain_images(trained, split, method, n, steps)
    elif kind == "table":
        from .tables import explain_table
        arrays = explain_table(trained, split, method, n, steps)
    else:
        from .text import explain_text
        arrays = explain_text(trained, split, method, n, steps, prompt)

    eval_dir = trained.run.path / "eval"
    figures = _write_figures(eval_dir / "explain", kind, arrays, method, n, splits.classes)
    meta = {"kind": kind, "method": method, "split": split, "checkpoint": trained.checkpoint,
            "steps": steps if method == "integrated_gradients" else None, "examples": n,
            "classes": list(splits.classes) if splits.classes else None,
            "figures": [str(f.relative_to(trained.run.path)) for f in figures]}
    from ..runs import atomic_write_bytes
    buf = io.BytesIO()
    np.savez(buf, meta=np.asarray(json.dumps(meta)), **arrays)
    atomic_write_bytes(eval_dir / "attributions.npz", buf.getvalue())
    if report:
        from ..report import write_report
        write_report(trained.run.path)
    return _summary(trained, meta, arrays, eval_dir)


def _check_arguments(method: str, split: Optional[str], examples: Optional[int], steps: int) -> None:
    from ..errors import ConfigError

    check_method(method)
    if split is not None and split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}' for explain (--split). Allowed: {', '.join(SPLITS)}.")
    if examples is not None and examples < 1:
        raise ConfigError(f"--examples {examples}: give at least 1.")
    if steps < 1:
        raise ConfigError(f"steps={steps}: integrated gradients need at least 1 step.")


def _write_figures(folder: Path, kind: str, arrays: dict, method: str, n: int, classes) -> list[Path]:
    from ..report.plots import DPI
    from ..runs import atomic_write_bytes

    signed = method != "saliency"
    if kind == "image":
        from .images import plot_heatmaps
        figs = {"heatmaps": plot_heatmaps(arrays, classes, n, signed)}
    elif kind == "table":
        from .tables import plot_examples, plot_importance
        figs = {"features": plot_importance(arrays, method), "examples": plot_examples(arrays, classes, signed)}
    else:
        from .text import plot_attention, plot_tokens
        figs = {"tokens": plot_tokens(arrays, signed), "attention": plot_attention(arrays)}
    paths = []
    for name, fig in figs.items():
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
        path = folder / f"{name}.png"
        atomic_write_bytes(path, png.getvalue())
        paths.append(path)
    return paths


def _summary(trained, meta: dict, arrays: dict, eval_dir: Path) -> dict:
    out = {"run_dir": str(trained.run.path), **{k: meta[k] for k in ("kind", "method", "split", "checkpoint")},
           "target": "logit of the predicted class" if meta["kind"] != "text" else "logit of the predicted next token",
           "n_examples": int(len(arrays["attributions"])), "attributions": str(eval_dir / "attributions.npz"),
           "figures": [str(trained.run.path / f) for f in meta["figures"]]}
    if meta["method"] == "integrated_gradients" and len(arrays["delta"]):
        # |sum(attributions) - (f(x) - f(baseline))|: in f's units, and relative to each example's
        # change (large where f(x) ~ f(baseline), however small the gap itself).
        gap, change = np.abs(arrays["delta"]), np.abs(arrays["output"] - arrays["baseline_output"])
        out["completeness_max_gap"] = float(gap.max())
        out["completeness_max_relative_gap"] = float(np.max(gap / np.maximum(change, 1e-12)))
    if meta["kind"] == "table":
        from .tables import ranking
        out["features"] = ranking(arrays)
    elif meta["kind"] == "text":
        out["prompts"] = [{"text": "".join(map(str, toks)), "next_token": str(nt), "probability": float(p),
                           "true_next": str(tn) or None,
                           "token_attributions": [[str(s), float(a)] for s, a in zip(toks, attr)]}
                          for toks, attr, nt, p, tn in zip(arrays["tokens"], arrays["attributions"],
                                                           arrays["next_token"], arrays["next_probability"],
                                                           arrays["true_next"])]
    else:
        classes = meta["classes"] or []
        out["examples"] = [{"index": int(i), "true": classes[t], "predicted": classes[p], "confidence": float(c),
                            "correct": bool(ok)} for i, t, p, c, ok in
                           zip(arrays["index"], arrays["true"], arrays["predicted"], arrays["confidence"],
                               arrays["correct"])]
    return out


def format_explanation(result: dict) -> str:
    """explain()'s result as terminal text: what was attributed, the top features or prompts, files."""
    lines = [f"{result['method']} on the {result['split']} split of {result['run_dir']} "
             f"({result['n_examples']} examples, {result['checkpoint']}.pt; f = {result['target']})"]
    if result.get("completeness_max_gap") is not None:
        lines.append(f"completeness: sum of attributions = f(x) - f(baseline) within "
                     f"{result['completeness_max_gap']:.3g} (at most "
                     f"{100 * result['completeness_max_relative_gap']:.3g}% of an example's f(x) - f(baseline))")
    if "features" in result:
        lines += ["", f"{'feature':<28} {'mean |attr|':>12} {'permutation':>12}"]
        lines += [f"{r['feature'][:28]:<28} {r['mean_abs_attribution']:>12.4g} "
                  f"{r['permutation_importance']:>12.4g}" for r in result["features"][:15]]
    for p in result.get("prompts", [])[:4]:
        lines += ["", f"{p['text']!r} -> {p['next_token']!r} ({p['probability']:.2f})"]
    lines += [""] + [f"attributions: {result['attributions']}"] + [f"figure: {f}" for f in result["figures"]]
    return "\n".join(lines)
