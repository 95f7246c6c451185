"""A finished search's results: results.csv, best.yaml, the best trial's one test evaluation, search.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import Config, load_config
from ..runs import atomic_write_json, atomic_write_text, read_json
from .options import Options
from .page import write_report
from .spaces import Param, fmt, trial_config
from .study import is_surplus


def _rows(study, params: dict[str, Param], metric: str) -> tuple[list[str], list[dict]]:
    """results.csv: one row per trial (surplus ones left out), its parameters, curve and metrics."""
    trials = [t for t in study.get_trials(deepcopy=False) if not is_surplus(t)]
    epochs = max((len(t.user_attrs.get("curve") or []) for t in trials), default=0)
    metric_cols = []
    for t in trials:
        for split, values in (t.user_attrs.get("metrics") or {}).items():
            metric_cols += [f"{split}.{k}" for k in values if f"{split}.{k}" not in metric_cols]
    header = (["trial", "state", "value"] + list(params) + [f"{metric}@epoch{e}" for e in range(1, epochs + 1)]
              + metric_cols + ["seconds", "pack_size", "stopped_because", "retry_of", "failure", "run_dir"])
    rows = []
    for t in trials:
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name, "value": t.value}
        for key, p in params.items():
            row[key] = p.decode(t.params[key]) if key in t.params else None
        for e, v in enumerate(t.user_attrs.get("curve") or [], start=1):
            row[f"{metric}@epoch{e}"] = v
        for split, values in (t.user_attrs.get("metrics") or {}).items():
            for k, v in values.items():
                row[f"{split}.{k}"] = v
        row["seconds"] = t.user_attrs.get("seconds")
        row["pack_size"] = t.user_attrs.get("pack_size")
        row["stopped_because"] = t.user_attrs.get("stopped_because")
        row["retry_of"] = t.system_attrs.get("failed_trial")
        row["failure"] = t.user_attrs.get("failure")
        row["run_dir"] = t.user_attrs.get("run_dir")
        rows.append(row)
    return header, rows


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
                         for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def conclude(study, cfg: Config, params: dict[str, Param], opts: Options, out_dir: Path, splits_for,
             say) -> dict:
    """results.csv, best.yaml, the best trial's one test evaluation, report.html, search.json."""
    from optuna.trial import TrialState
    header, rows = _rows(study, params, opts.metric)
    _write_csv(out_dir / "results.csv", header, rows)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    result: dict[str, Any] = {"best": None, "trials": len(complete), "out_dir": str(out_dir)}
    if not complete:
        say("no trial completed: see results.csv for the failures")
        atomic_write_json(out_dir / "search.json", result)
        return result
    best = study.best_trial
    best_params = {k: params[k].decode(v) for k, v in best.params.items() if k in params}
    result["best"] = {"params": best_params, "value": best.value, "trial": best.number}
    best_cfg = trial_config(cfg, best_params, name=cfg.name)
    text = (f"# Best of {len(complete)} trials of `trainlab search` ({opts.strategy}), by {opts.metric} = "
            f"{best.value:.6g} (trial {best.number}).\n# Train it: trainlab train -c best.yaml\n")
    atomic_write_text(out_dir / "best.yaml", text + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
    test = _evaluate_on_test(best, best_cfg, splits_for)
    if test is not None:
        result["best"]["test"] = test
    atomic_write_json(out_dir / "search.json", result)
    try:
        write_report(out_dir, study, params, opts, rows, result)
    except Exception as e:  # a report problem must not lose the search's results
        say(f"warning: report.html not written ({type(e).__name__}: {e})")
    shown = "  ".join(f"{k}={fmt(v)}" for k, v in best_params.items())
    say(f"best trial {best.number}: {shown}  {opts.metric} {best.value:.4f}")
    if test is not None:
        say("test (best trial, evaluated once): " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return result


def _evaluate_on_test(best, best_cfg: Config, splits_for) -> Optional[dict]:
    """The best trial's final weights on the test split: the one time the test split is looked at."""
    import torch

    from .. import checkpoint, losses
    from ..data.loader import make_batches
    from ..models import build_model
    from ..runs import RunDir
    from ..train import evaluate_model, resolve_device

    run_dir = best.user_attrs.get("run_dir")
    if not run_dir or not Path(run_dir).is_dir():
        return None  # run by a worker on another machine: its run directory is there
    run = RunDir(Path(run_dir))
    cfg = load_config(run.config)
    summary = read_json(run.summary) if run.summary.is_file() else {}
    name = summary.get("final_checkpoint", "best")
    path = run.checkpoints / f"{name}.pt"
    if not path.is_file():
        path = run.best if run.best.is_file() else run.last
    if not path.is_file():
        return None
    splits = splits_for(cfg)
    if splits.test is None:
        return None
    device = resolve_device(cfg.train.device)
    dtype = getattr(torch, cfg.train.dtype)
    loss_name = losses.resolve_name(cfg, splits.task, splits.num_classes)
    model = build_model(cfg.model, splits.input_shape, losses.num_outputs(loss_name, splits.task, splits.num_classes))
    model = model.to(device=device, dtype=dtype)
    checkpoint.load_weights(model, path)
    batches = make_batches(splits, "test", cfg.eval.batch_size, device, dtype, cfg)
    test = evaluate_model(model, batches, losses.build_loss(cfg, splits.task, splits.num_classes), splits.task,
                          loss_name, splits.extra.get("target_std", 1.0))
    if run.summary.is_file():  # the trial's summary gets its test metrics, as a train() run's has
        summary.setdefault("metrics", {})["test"] = test
        atomic_write_json(run.summary, summary)
    return test
