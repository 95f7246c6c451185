"""Optional experiment loggers (train.logger): each epoch's metrics row also goes to TensorBoard,
MLflow or RUN/metrics.csv. metrics.jsonl stays the record; these are for people who live in those tools.

    logger = make_logger(cfg, run_dir)      # None for train.logger=none
    logger(epoch, row)                      # after each epoch's row is written to metrics.jsonl
    logger.close()                          # when training ends, however it ends
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional

from .errors import ConfigError
from .runs import RunDir, atomic_write_text


def _numbers(row: dict) -> dict[str, float]:
    """The row's finite numeric values (a diverged loss is skipped, not logged as NaN)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v)}


def _tag(key: str) -> str:
    """train_loss -> train/loss, so TensorBoard and MLflow group the splits' curves."""
    split, _, metric = key.partition("_")
    return f"{split}/{metric}" if split in ("train", "val", "test") and metric else key


class CsvLogger:
    """RUN/metrics.csv: the metrics.jsonl rows as a table, rewritten whole (atomically) every epoch."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.csv"
        self.rows = RunDir(Path(run_dir)).read_metrics()  # a resumed run keeps its earlier epochs

    def __call__(self, epoch: int, row: dict) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [dict(row)]
        columns: list[str] = []
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.path, buf.getvalue())

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """RUN/tensorboard/: one scalar per metric per epoch (`tensorboard --logdir RUN/tensorboard`)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.logger=tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or use train.logger=csv).") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def __call__(self, epoch: int, row: dict) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(_tag(key), value, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    """An MLflow run (tracking URI from MLFLOW_TRACKING_URI, else mlflow's default ./mlruns)."""

    def __init__(self, cfg, run_dir: Path):
        try:
            import mlflow
        except ImportError:
            raise ConfigError("train.logger=mlflow needs the mlflow package: pip install mlflow "
                              "(or use train.logger=csv).") from None
        self.mlflow = mlflow
        mlflow.start_run(run_name=Path(run_dir).name)
        mlflow.log_params(_flatten(cfg.to_dict()))
        mlflow.set_tag("trainlab.run_dir", str(run_dir))

    def __call__(self, epoch: int, row: dict) -> None:
        self.mlflow.log_metrics({_tag(k): v for k, v in _numbers(row).items()}, step=epoch)

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def make_logger(cfg, run_dir: str | Path) -> Optional[CsvLogger | TensorBoardLogger | MlflowLogger]:
    """The logger train.logger names, or None; a missing package is a ConfigError (exit 2) at once."""
    name = cfg.train.logger
    run_dir = Path(run_dir)
    if name == "none":
        return None
    if name == "csv":
        return CsvLogger(run_dir)
    if name == "tensorboard":
        return TensorBoardLogger(run_dir)
    if name == "mlflow":
        return MlflowLogger(cfg, run_dir)
    raise ConfigError(f"train.logger={name} is not a logger; use none, tensorboard, csv or mlflow.")
