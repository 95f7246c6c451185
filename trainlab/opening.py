"""Where a run begins: a new run directory with its config, or the run --resume continues (its
config.yaml and last.pt), and --smoke's small version of a config."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from . import checkpoint, distributed
from .config import Config, build_config, load_config, save_config
from .distributed import World
from .errors import ConfigError
from .runs import RunDir


def open_run(config, out, resume, smoke, world: World = World()) -> tuple[Config, RunDir, Optional[dict]]:
    """The config and run directory of a new run, or of the run `resume` continues with its last.pt.

    On several processes rank 0 opens the run and sends the config, path and checkpoint to the
    others (their machines may not see its disk). Under torchrun --max-restarts, a restarted group
    given --out resumes from that folder's last.pt.
    """
    restarted = resume is None and out is not None and distributed.restart_count() > 0
    if restarted and RunDir(Path(out)).last.exists():
        resume = out
    cfg, path, saved = world.on_writer(lambda: _open_run(config, out, resume, smoke, in_place=restarted))
    return cfg, RunDir(Path(path)), saved


def _open_run(config, out, resume, smoke, in_place: bool = False) -> tuple[Config, str, Optional[dict]]:
    """open_run's work on one process; `in_place`: a restarted group reuses its --out folder.

    --resume of a run directory that has config.yaml but no checkpoints/last.pt yet (killed while
    it loaded its data or trained its first steps) begins that run again from the start in place,
    with its saved config, and warns that it does. --resume removes the temp files of writes a
    kill cut short (atomic_write_bytes' `.NAME.*.tmp`).
    """
    if resume is not None:
        run = RunDir(Path(resume))
        if not run.config.is_file():
            raise ConfigError(f"'{resume}' is not a run directory: it has no config.yaml. "
                              "Give the folder a previous `trainlab train` wrote.")
        run.lock()  # another live process training in it: ConfigError naming its pid and host
        # Temp files of writes a killed run left half done: only training writes these names, and the
        # lock now keeps every other training process out.
        for name in ("config.yaml", "metrics.jsonl", "summary.json", "tokenizer.json", "checkpoints/last.pt",
                     "checkpoints/best.pt"):
            path = run.path / name
            for torn in path.parent.glob(f".{path.name}.*.tmp"):
                torn.unlink(missing_ok=True)
        cfg = load_config(run.config)
        if run.last.exists():
            return cfg, str(run.path), checkpoint.load(run.last, config=cfg, resumable=True)
        warnings.warn(f"'{resume}' has no checkpoint yet (it stopped before its first one was saved): "
                      "training begins again from the start in that folder.", stacklevel=3)
        out, in_place = resume, True
    else:
        cfg = prepare_config(config)
        if smoke:
            cfg = apply_smoke(cfg)
    if in_place:  # the first attempt died before its first checkpoint: begin again in its folder
        run = RunDir(Path(out)).lock()  # the dead attempt's lock went with its process
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        run.metrics.unlink(missing_ok=True)
        run.best.unlink(missing_ok=True)  # an epoch-1 best.pt can be saved before that epoch's last.pt
    else:
        run = RunDir.create(out, cfg.name)
    save_config(cfg, run.config)
    return cfg, str(run.path), None


def check_command(run: RunDir, saved: dict, pretraining: bool) -> None:
    """--resume continues a run with the command that began it: a pretrain run's weights are an encoder's."""
    encoder = checkpoint.holds_encoder(saved["model"])
    if encoder != pretraining:
        began, other = ("pretrain", "train") if encoder else ("train", "pretrain")
        raise ConfigError(f"'{run.path}' is a `trainlab {began}` run, not a `trainlab {other}` one: continue it "
                          f"with trainlab {began} --resume {run.path}")


def prepare_config(config: Config | dict | str | Path) -> Config:
    """A Config from a Config, a dict of sections or a YAML path."""
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return build_config(config)
    return load_config(config)


def apply_smoke(cfg: Config) -> Config:
    """--smoke: at most 2 epochs (or 2 x 10 steps) on 512 training examples (at most 256 labelled),
    evaluation on 512: seconds."""
    raw = cfg.to_dict()
    raw["train"]["epochs"] = min(cfg.train.epochs, 2)
    if cfg.train.steps:  # a step budget: at most 2 evaluations 10 steps apart
        every = min(cfg.eval.every or cfg.train.steps, 10)
        steps = min(cfg.train.steps // every, 2) * every
        raw["train"]["steps"], raw["eval"]["every"] = steps, every
    raw["data"]["limit"] = min(cfg.data.limit or 512, 512)
    if cfg.data.labelled:  # fewer than the 512 examples kept (461 after the validation split)
        raw["data"]["labelled"] = min(cfg.data.labelled, 256)
    raw["eval"]["limit"] = min(cfg.eval.limit or 512, 512)
    return build_config(raw)
