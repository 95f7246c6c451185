"""evaluate(run_dir) -> metrics: a trained run's checkpoint scored on one split, with files to check it by.

Writes into RUN/eval/ (each file atomically):

- ``metrics.json``      ``{"run_dir", "split", "checkpoint", "task", "classes", "n_examples", **metrics}``:
                        metrics.classification_metrics without its "curves", or regression_metrics
- ``curves.json``       classification only: the ROC, precision-recall and reliability curves
- ``predictions.csv``   one row per example: ``index,true,predicted,p_<class>...`` (true/predicted
                        are class names; p_ columns follow the run's class order), or
                        ``index,true,predicted`` in the target's units for regression
- ``diagnosis.json``    ``[{"kind", "message", "epoch", "remedies"}]`` read from metrics.jsonl
- ``wrong_examples.npz`` image data only: the most confidently wrong examples (raw pixels)

and then RUN/report.html through trainlab.report.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import checkpoint, data, losses
from .config import Config, load_config
from .data import FileSplit, Splits
from .data.loader import make_batches
from .errors import ConfigError, DataError
from .runs import RunDir, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

SPLITS = ("train", "val", "test")
N_WRONG = 25  # examples in wrong_examples.npz: a 5x5 grid in the report


@dataclass
class TrainedRun:
    """A run directory loaded back: its config, data splits and model with the chosen weights."""

    run: RunDir
    cfg: Config
    splits: Splits
    model: torch.nn.Module       # in eval mode, on `device`
    checkpoint: str              # "best" | "last"
    loss_name: str
    device: torch.device
    dtype: torch.dtype


def read_run_config(run: RunDir) -> Config:
    if not run.path.is_dir():
        raise ConfigError(f"Run directory '{run.path}' does not exist. Give a folder `trainlab train` wrote "
                          "(runs/<name>-<timestamp> or its --out).")
    if not run.config.is_file():
        raise ConfigError(f"'{run.path}' is not a complete run directory: it has no config.yaml (a half-written "
                          "or foreign folder). Give a folder `trainlab train` wrote, or train it again.")
    try:
        return load_config(run.config)
    except ConfigError as e:
        raise ConfigError(f"Run directory '{run.path}' has an unreadable config.yaml (a half-written run?): "
                          f"{e}") from None


def _choose_checkpoint(run: RunDir) -> str:
    """summary.json's final_checkpoint when the run finished; else best.pt if any, else last.pt."""
    name = None
    if run.summary.is_file():
        try:
            name = read_json(run.summary).get("final_checkpoint")
        except (ValueError, AttributeError):
            name = None  # an unreadable summary: fall back to the files themselves
    if name not in ("best", "last") or not (run.checkpoints / f"{name}.pt").is_file():
        name = "best" if run.best.is_file() else "last"
    if not (run.checkpoints / f"{name}.pt").is_file():
        raise ConfigError(f"Run directory '{run.path}' has no checkpoint ({run.best} or {run.last}): the run "
                          f"never finished an epoch. Train it first: trainlab train --resume {run.path}, "
                          "or train a new run.")
    return name


def load_run(run_dir: str | Path, data_dir: Optional[str] = None,
             model: Optional[torch.nn.Module] = None) -> TrainedRun:
    """Config, data and model of a finished (or interrupted) run, with the weights evaluation uses.

    `model`: the nn.Module a run was trained with when it was passed to train() as an object
    (level b); by default the model is rebuilt from the run's config, as train() builds it.
    """
    run = RunDir(Path(run_dir))
    cfg = read_run_config(run)
    ckpt = _choose_checkpoint(run)
    # The training device when it is still there; a run trained on cuda evaluates on the CPU otherwise.
    device = torch.device("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, cfg.train.dtype)
    tokenizer = None
    if cfg.model.name == "gpt":  # a language model reads its text through the run's own tokenizer
        if not run.tokenizer.is_file():
            raise DataError(f"'{run.tokenizer}' is missing: a language-model run needs its tokenizer. Train the "
                            "run again, or restore the file.")
        from .data.text import Tokenizer
        tokenizer = Tokenizer.from_json(run.tokenizer.read_text())
    splits = data.load(cfg, data_dir, tokenizer=tokenizer)
    loss_name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    if model is None:
        from .models import build_model
        model = build_model(cfg.model, splits.input_shape, losses.num_outputs(loss_name, splits.task,
                                                                               splits.num_classes))
    model = model.to(device=device, dtype=dtype)
    checkpoint.load_weights(model, run.checkpoints / f"{ckpt}.pt")
    model.eval()
    return TrainedRun(run, cfg, splits, model, ckpt, loss_name, device, dtype)


@torch.no_grad()
def _outputs(trained: TrainedRun, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(n,) true labels or target values (target units) and (n, K) probabilities or (n,) values."""
    t = trained
    batches = make_batches(t.splits, split, t.cfg.eval.batch_size, t.device, t.dtype, t.cfg)
    chunks = []
    for x, _ in batches.epoch():
        # float64 before softmax: probability rows sum to 1 to ~1e-16, what scikit-learn expects.
        chunks.append(losses.predictions(t.model(x).double(), t.loss_name, t.splits.task).cpu())
    out = torch.cat(chunks).numpy()
    y = getattr(t.splits, split).y[: batches.n].numpy()  # eval.limit: the first n, as train() scores
    if t.splits.task == "regression":
        mean, std = t.splits.extra["target_mean"], t.splits.extra["target_std"]
        return y.astype(np.float64), out * std + mean
    return y.astype(np.int64), out


def csv_safe(names: list[str]) -> list[str]:
    """Class names usable in a CSV header: runs of characters other than [A-Za-z0-9_.-] become "_".

    >>> csv_safe(["T-shirt/top", "Ankle boot"])
    ['T-shirt_top', 'Ankle_boot']
    """
    out: list[str] = []
    for name in names:
        safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)).strip("_") or "class"
        base, n = safe, 2
        while safe in out:  # two names that differ only in unsafe characters stay distinct
            safe, n = f"{base}_{n}", n + 1
        out.append(safe)
    return out


def _predictions_csv(y: np.ndarray, out: np.ndarray, classes: Optional[list[str]]) -> str:
    """repr() of a float64 round-trips exactly, so figures recomputed from the file are the same."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if classes is None:
        w.writerow(["index", "true", "predicted"])
        for i, (t, p) in enumerate(zip(y.tolist(), out.tolist())):
            w.writerow([i, repr(float(t)), repr(float(p))])
    else:
        w.writerow(["index", "true", "predicted"] + [f"p_{c}" for c in csv_safe(classes)])
        pred = out.argmax(1)  # ties -> lowest index, as classification_metrics
        for i, (t, p, row) in enumerate(zip(y.tolist(), pred.tolist(), out.tolist())):
            w.writerow([i, classes[t], classes[p]] + [repr(v) for v in row])
    return buf.getvalue()


def _wrong_examples(trained: TrainedRun, split: str, y: np.ndarray, proba: np.ndarray) -> dict:
    """The N_WRONG most confidently wrong examples: raw pixels as stored (uint8, or float for digits)."""
    pred = proba.argmax(1)
    conf = proba.max(1)
    wrong = np.flatnonzero(pred != y)
    index = wrong[np.argsort(-conf[wrong], kind="stable")][:N_WRONG]
    s = getattr(trained.splits, split)
    if isinstance(s, FileSplit):
        from .data.folder import read_image
        size = trained.splits.input_shape[-1]
        images = [read_image(s.files[i], size).numpy() for i in index]
        images = np.stack(images) if images else np.zeros((0, *trained.splits.input_shape), np.uint8)
    else:
        images = s.x[torch.as_tensor(index, dtype=torch.long)].numpy()
    return {"images": images, "true": y[index].astype(np.int64), "predicted": pred[index].astype(np.int64),
            "confidence": conf[index].astype(np.float64), "index": index.astype(np.int64)}


def evaluate(run_dir: str | Path, split: Optional[str] = None, data_dir: Optional[str] = None,
             model: Optional[torch.nn.Module] = None, report: bool = True) -> dict:
    """Score a trained run on `split` ("test", "val" or "train"; default test, or val for a text run
    split without a test part); returns eval/metrics.json's object.

    >>> m = evaluate("runs/seed_mlp-20261128-171500")
    >>> m["accuracy"], m["f1_macro"], m["roc_auc_ovr_macro"]
    Uses the weights summary.json's final_checkpoint names (best.pt, else last.pt), the run's
    eval.batch_size and eval.limit, and writes RUN/eval/ (module docstring) and, unless
    report=False, RUN/report.html. `model`: the nn.Module object a run was trained with, if any.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"Unknown split '{split}'. Allowed splits: {', '.join(SPLITS)}.")
    trained = load_run(run_dir, data_dir, model)
    run, splits = trained.run, trained.splits
    if split is None:
        split = "test" if splits.test is not None or splits.val is None else "val"
    if getattr(splits, split) is None:
        allowed = [s for s in SPLITS if getattr(splits, s) is not None]
        raise ConfigError(f"Run '{run.path}' has no '{split}' split (data.val_fraction="
                          f"{trained.cfg.data.val_fraction}). Allowed splits: {', '.join(allowed)}.")

    if splits.task == "language_model":
        result = _evaluate_language_model(trained, split)
        if report:
            from .report import write_report
            write_report(run.path)
        return result
    y, out = _outputs(trained, split)
    from . import metrics as m
    result = {"run_dir": str(run.path), "split": split, "checkpoint": trained.checkpoint, "task": splits.task,
              "classes": list(splits.classes) if splits.task == "classification" else None,
              "n_examples": int(len(y))}
    eval_dir = run.path / "eval"
    if splits.task == "classification":
        scores = m.classification_metrics(y, out, splits.classes)
        curves = scores.pop("curves")
        atomic_write_json(eval_dir / "curves.json", curves, indent=None)  # ~300k numbers, read by programs
    else:
        scores = m.regression_metrics(y, out)
        (eval_dir / "curves.json").unlink(missing_ok=True)  # left from an older evaluation, if any
    result.update(scores)
    atomic_write_text(eval_dir / "predictions.csv", _predictions_csv(y, out, result["classes"]))

    from .diagnose import diagnose
    findings = diagnose(run.read_metrics(), trained.cfg.to_dict())
    atomic_write_json(eval_dir / "diagnosis.json", [asdict(f) for f in findings])

    wrong_path = eval_dir / "wrong_examples.npz"
    if splits.is_image and splits.task == "classification":
        buf = io.BytesIO()
        np.savez(buf, **_wrong_examples(trained, split, y, out))
        atomic_write_bytes(wrong_path, buf.getvalue())
    else:
        wrong_path.unlink(missing_ok=True)
    atomic_write_json(eval_dir / "metrics.json", result)

    if report:
        from .report import write_report
        write_report(run.path)
    return result


SAMPLE_PROMPTS = ("\n", "ROMEO:")  # generated in a language model's report: its own start, and a speaker
SAMPLE_TOKENS = 300


def _evaluate_language_model(trained: TrainedRun, split: str) -> dict:
    """Next-token loss, accuracy, perplexity and bits per character (or byte) over every window of
    the split, and seeded samples after fixed prompts; writes eval/metrics.json and diagnosis.json."""
    from .data.text import language_metrics
    from .diagnose import diagnose
    from .gpt import generate
    from .passes import evaluate_model

    t, eval_dir = trained, trained.run.path / "eval"
    batches = make_batches(t.splits, split, t.cfg.eval.batch_size, t.device, t.dtype, t.cfg)
    loss_fn = losses.build_loss(t.cfg, t.splits.task, t.splits.num_classes)
    scores = evaluate_model(t.model, batches, loss_fn, t.splits.task, t.loss_name)
    tokenizer = t.splits.extra["tokenizer"]
    samples = []
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        try:
            ids = tokenizer.encode(prompt)
        except ConfigError:  # a char vocabulary without these characters: skip that prompt
            continue
        out = generate(t.model, torch.tensor([ids], device=t.device), SAMPLE_TOKENS, temperature=0.8, top_k=200,
                       generator=torch.Generator(t.device).manual_seed(i))
        samples.append({"prompt": prompt, "text": tokenizer.decode(out[0, len(ids):].tolist())})
    result = {"run_dir": str(t.run.path), "split": split, "checkpoint": t.checkpoint, "task": t.splits.task,
              "classes": None, "n_tokens": sum(batches.batch_sizes()), **scores,
              **language_metrics(scores["loss"], t.splits.extra), "samples": samples}
    findings = diagnose(t.run.read_metrics(), t.cfg.to_dict())
    atomic_write_json(eval_dir / "diagnosis.json", [asdict(f) for f in findings])
    atomic_write_json(eval_dir / "metrics.json", result)
    return result


# ---------------------------------------------------------------- terminal output

HEADLINE = ("accuracy", "balanced_accuracy", "top5_accuracy", "log_loss", "precision_macro", "recall_macro",
            "f1_macro", "f1_weighted", "roc_auc", "roc_auc_ovr_macro", "average_precision_macro", "ece",
            "mse", "rmse", "mae", "r2", "loss", "perplexity", "bits_per_char", "bits_per_byte")


def _num(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def html_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def format_evaluation(result: dict) -> str:
    """evaluate()'s result as terminal text: headline metrics, per-class table, diagnosis, files."""
    count = (f"{result['n_tokens']} tokens" if "n_tokens" in result else f"{result['n_examples']} examples")
    lines = [f"{result['split']} split of {result['run_dir']} ({count}, {result['checkpoint']}.pt)", ""]
    lines += html_table(["metric", "value"], [[k, _num(result[k])] for k in HEADLINE if k in result])
    per_class = result.get("per_class")
    if per_class:
        lines.append("")
        lines += html_table(["class", "precision", "recall", "f1", "support", "roc_auc"],
                            [[name, _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), str(c["support"]),
                          _num(c["roc_auc"])] for name, c in per_class.items()])
    for sample in result.get("samples", []):
        lines += ["", f"sample after {sample['prompt']!r}:", sample["prompt"] + sample["text"]]
    eval_dir = Path(result["run_dir"]) / "eval"
    diagnosis = eval_dir / "diagnosis.json"
    if diagnosis.is_file():
        from .diagnose import Finding, format_findings
        lines += ["", "diagnosis:", format_findings([Finding(**f) for f in read_json(diagnosis)])]
    lines += ["", f"files: {eval_dir}/"]
    if (eval_dir / "attributions.npz").is_file():  # trainlab explain's, shown in the report too
        lines.append(f"attributions: {eval_dir / 'attributions.npz'}")
    report = Path(result["run_dir"]) / "report.html"
    if report.is_file():
        lines.append(f"report: {report}")
    return "\n".join(lines)
