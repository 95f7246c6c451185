"""Reading a run directory's saved files: RunFiles, load_run, metrics.jsonl columns, predictions.csv."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError


@dataclass
class RunFiles:
    """What a run directory holds, each part None (or empty) when its file is missing."""

    path: Path
    config_text: Optional[str] = None
    config: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)        # metrics.jsonl, one dict per epoch
    summary: Optional[dict] = None
    eval: Optional[dict] = None                            # eval/metrics.json
    curves: Optional[dict] = None                          # eval/curves.json {roc, pr, reliability}
    diagnosis: Optional[list[dict]] = None                 # eval/diagnosis.json
    wrong: Optional[dict] = None                           # eval/wrong_examples.npz arrays
    predictions: Optional[Path] = None                     # eval/predictions.csv
    problems: list[str] = field(default_factory=list)      # files present but unreadable
    attributions: Optional[dict] = None                    # eval/attributions.npz arrays (trainlab explain)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_epoch(self) -> Optional[int]:
        return (self.summary or {}).get("best_epoch")

    @property
    def classes(self) -> Optional[list[str]]:
        return (self.eval or {}).get("classes")


def load_run(run_dir: str | Path) -> RunFiles:
    """Read every file of a run that exists; a folder with neither config.yaml nor metrics.jsonl
    is not a run (ConfigError, exit 2). A file that exists but does not parse is noted, not fatal."""
    import yaml

    path = Path(run_dir)
    run = RunFiles(path)
    if not path.is_dir() or not ((path / "config.yaml").is_file() or (path / "metrics.jsonl").is_file()):
        raise ConfigError(f"'{path}' is not a run directory: it has no config.yaml or metrics.jsonl. "
                          "Give a folder that `trainlab train` wrote.")

    def attempt(name: str, read):
        file = path / name
        if not file.is_file():
            return None
        try:
            return read(file)
        except Exception as err:  # a report shows what it can; the note names the bad file
            run.problems.append(f"{name}: {type(err).__name__}: {err}")
            return None

    run.config_text = attempt("config.yaml", lambda f: f.read_text())
    if run.config_text is not None:
        run.config = attempt("config.yaml", lambda f: yaml.safe_load(run.config_text) or {}) or {}
    run.rows = attempt("metrics.jsonl", lambda f: [json.loads(line) for line in f.read_text().splitlines()
                                                   if line.strip()]) or []
    run.summary = attempt("summary.json", lambda f: json.loads(f.read_text()))
    run.eval = attempt("eval/metrics.json", lambda f: json.loads(f.read_text()))
    run.curves = attempt("eval/curves.json", lambda f: json.loads(f.read_text()))
    run.diagnosis = attempt("eval/diagnosis.json", lambda f: json.loads(f.read_text()))
    run.wrong = attempt("eval/wrong_examples.npz", _read_npz)
    run.attributions = attempt("eval/attributions.npz", _read_npz)
    if (path / "eval" / "predictions.csv").is_file():
        run.predictions = path / "eval" / "predictions.csv"
    return run


def _read_npz(file: Path) -> dict:
    with np.load(file, allow_pickle=False) as z:  # never unpickle: plain arrays only
        return {k: z[k] for k in z.files}


def read_predictions(path: Path) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(true, predicted) float columns of a regression predictions.csv, or None when the header has
    no recognisable pair (accepted names: true/y_true/target and predicted/y_pred/prediction)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        t = next((h for h in ("true", "y_true", "target") if h in header), None)
        p = next((h for h in ("predicted", "y_pred", "prediction", "pred") if h in header), None)
        if t is None or p is None:
            return None
        pairs = [(as_float(r.get(t)), as_float(r.get(p))) for r in reader]
    arr = np.array(pairs, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


# ---------------------------------------------------------------- metrics.jsonl columns


def column(rows: list[dict], key: str) -> np.ndarray:
    """A metrics.jsonl column as floats; None (a NaN written as null) and missing become NaN."""
    return np.array([as_float(r.get(key)) for r in rows], dtype=float)


def as_float(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def has_column(rows: list[dict], key: str) -> bool:
    """Whether any row holds a finite value of `key`."""
    return bool(np.isfinite(column(rows, key)).any()) if rows else False


def curve_metrics(rows: list[dict]) -> list[str]:
    """The metrics a run's curves hold, in plotting order: loss, then accuracy or rmse."""
    out = ["loss"] if has_column(rows, "train_loss") or has_column(rows, "val_loss") else []
    for metric in ("accuracy", "rmse"):
        if has_column(rows, f"train_{metric}") or has_column(rows, f"val_{metric}"):
            out.append(metric)
            break
    return out
