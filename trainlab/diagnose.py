"""Reads a run's per-epoch curves (metrics.jsonl rows), names what went wrong and suggests config overrides.

Example (rows: the dicts of metrics.jsonl, one per epoch)::

    print(format_findings(diagnose(rows, config)))
    # overfitting (epoch 12): Overfitting from epoch 12: validation loss rose 48% from ...
    #     try: train.early_stopping.patience=3  train.epochs=12  regularize.l2=1.0e-4  model.dropout=0.2

Every rule reads smoothed curves (a centred 3-epoch moving average), medians of the last epochs
or several epochs together, so one noisy epoch does not fire a finding; the thresholds are the
module constants below, each with the reason for its value. Remedies are dotted overrides
(`key=value`, the value in YAML) phrased relative to the run's config when one is given; with
``config=None`` the defaults of trainlab.config are assumed, and the learning rate is read from
the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

KINDS = ("divergence", "lr_too_high", "instability", "overfitting", "underfitting", "lr_too_low",
         "best_epoch", "healthy")

SMOOTH = 3  # epochs in the centred moving average: the shortest window that damps one outlier

# overfitting
OVERFIT_MIN_AFTER = 3       # epochs after the val-loss minimum before a rise can be called a trend
OVERFIT_RISE = 0.05         # val loss must end >= 5% above its (smoothed) minimum ...
OVERFIT_NOISE_SIGMAS = 3.0  # ... and >= 3 noise standard deviations above it, so noise alone
                            # (a flat plateau) does not fire
TRAIN_STILL_FALLING = 0.01  # train loss must end >= 1% below its value at the onset

# underfitting
UNDERFIT_FLAT = 0.05        # < 5% relative improvement over the last half counts as flat
UNDERFIT_ACC = 0.90         # classification: train accuracy below 90% is "far from 1"
UNDERFIT_LOSS_RATIO = 0.80  # regression: final train loss > 80% of the first epoch's is "high"

# instability / learning rate too high
SPIKE_JUMP = 0.25           # a spike: train loss >= 25% above the previous epoch's ...
SPIKE_NOISE = 3.0           # ... by >= 3x the median epoch-to-epoch change (the curve's own noise)
SPIKE_SCALE = 0.02          # ... and by >= 2% of the largest train loss (ignores wiggles near 0)
UP_STEP = 0.05              # an "up" step: train loss >= 5% above the previous epoch
OSCILLATING = 0.25          # >= 25% of the steps going up (and >= 2 of them) is oscillation;
                            # epoch-averaged train loss normally falls almost every epoch
RISING = 1.02               # train loss ending (median of the last 3) >= 2% above epoch 1

# learning rate too low
SLOW_R2 = 0.90              # near-linear: a straight line explains >= 90% of the variance
SLOW_REL_SLOPE = 0.02       # < 2% of the mean train loss gained per epoch is slow
SLOW_KEEPS_PACE = 0.5       # the last half still falls at >= half the overall rate (no bend)
SLOW_TOTAL = 0.5            # and the run gained < 50% in all
SLOW_MAX_ACC = 0.95         # a run already at 95% train accuracy is not "too slow"
VERY_SLOW = 0.005           # < 0.5%/epoch: suggest lr x10 instead of x3

IMAGE_SETS = ("mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "imagefolder")


@dataclass
class Finding:
    """One diagnosis: what (kind), a sentence with the numbers, the epoch it concerns, the fixes."""

    kind: str
    message: str
    epoch: Optional[int] = None
    remedies: list[str] = field(default_factory=list)


def diagnose(rows: list[dict], config: Any = None) -> list[Finding]:
    """Name the problems in a run's curves; always ends with the best epoch (and "healthy" if none).

    ``rows``: metrics.jsonl rows (epoch, lr, train_loss, val_loss, [train_|val_]accuracy; values
    may be None/NaN/inf). ``config``: the run's config as a dict (Config.to_dict()) or Config.
    """
    cfg = _Cfg(config)
    c = _Curves(rows)
    if c.n == 0:
        return [Finding("best_epoch", "No epochs recorded, so there is nothing to diagnose.")]
    lr = cfg.user("optim.lr") or c.max_lr or cfg.get("optim.lr")
    problems: list[Finding] = []

    div = _divergence(c, cfg, lr)
    if div:
        problems.append(div)
    p = c.finite_prefix()  # the rules below read the epochs before any non-finite loss
    high = _lr_too_high(p, cfg, lr)
    spikes = _instability(p, cfg, lr)
    over = _overfitting(p, cfg)
    slow = _lr_too_low(p, cfg, lr)
    # An lr that is too high or too low explains high losses better than model capacity does.
    under = None if (high or slow) else _underfitting(p, cfg)
    problems += [f for f in (high, spikes, over, under, slow) if f]

    findings = problems + [_best_epoch(c, cfg)]
    if not problems:
        findings.append(_healthy(c))
    return findings


def format_findings(findings: list[Finding]) -> str:
    """Terminal text: one line per finding, remedies indented below it."""
    lines = []
    for f in findings:
        where = f" (epoch {f.epoch})" if f.epoch is not None else ""
        lines.append(f"{f.kind}{where}: {f.message}")
        if f.remedies:
            lines.append("    try: " + "  ".join(f.remedies))
    return "\n".join(lines)


# ---------------------------------------------------------------- inputs


class _Curves:
    """The rows as float arrays (NaN where missing), sorted by epoch; the last row of an epoch wins."""

    def __init__(self, rows: list[dict]):
        by_epoch: dict[int, dict] = {}
        for i, r in enumerate(rows):
            by_epoch[int(r.get("epoch", i + 1))] = r
        ordered = [by_epoch[e] for e in sorted(by_epoch)]
        self.n = len(ordered)
        self.epoch = np.array(sorted(by_epoch), dtype=int)
        self.cols = {k: np.array([_num(r.get(k)) for r in ordered], dtype=float)
                     for k in {k for r in ordered for k in r}}
        # A column counts as recorded when any row has a value other than None/missing, so a run
        # without validation is not mistaken for one whose val loss went NaN.
        self.recorded = {k for k in self.cols if any(r.get(k) is not None for r in ordered)}
        lrs = self.col("lr")
        self.max_lr = float(np.nanmax(lrs)) if np.isfinite(lrs).any() else None

    def col(self, key: str) -> np.ndarray:
        return self.cols.get(key, np.full(self.n, np.nan))

    def has(self, key: str) -> bool:
        return key in self.recorded and bool(np.isfinite(self.col(key)).any())

    def first_bad(self) -> Optional[tuple[int, str, float]]:
        """(index, column, value) of the first non-finite loss, or None."""
        for i in range(self.n):
            for key in ("train_loss", "val_loss"):
                if key in self.recorded and not math.isfinite(self.cols[key][i]):
                    return i, key, self.cols[key][i]
        return None

    def finite_prefix(self) -> "_Curves":
        bad = self.first_bad()
        if bad is None:
            return self
        p = object.__new__(_Curves)
        m = bad[0]
        p.n, p.epoch, p.recorded, p.max_lr = m, self.epoch[:m], self.recorded, self.max_lr
        p.cols = {k: v[:m] for k, v in self.cols.items()}
        return p


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)  # also reads "NaN" / "Infinity" strings
    except (TypeError, ValueError):
        return math.nan


class _Cfg:
    """Dotted reads of the run's config over trainlab's defaults."""

    def __init__(self, config: Any):
        if config is not None and not isinstance(config, dict):
            config = config.to_dict() if hasattr(config, "to_dict") else config.model_dump(mode="json")
        self.given = config or {}
        from .config import Config  # the one place defaults live
        self.defaults = Config().to_dict()

    def user(self, key: str) -> Any:
        return _dig(self.given, key)

    def get(self, key: str) -> Any:
        v = _dig(self.given, key)
        return _dig(self.defaults, key) if v is None and not _has(self.given, key) else v


def _dig(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _has(tree: dict, key: str) -> bool:
    *head, last = key.split(".")
    node = _dig(tree, ".".join(head)) if head else tree
    return isinstance(node, dict) and last in node


# ---------------------------------------------------------------- curve helpers


def _smooth(x: np.ndarray, w: int = SMOOTH) -> np.ndarray:
    """Centred moving average; the window shrinks at the ends so the minimum does not shift."""
    h = w // 2
    return np.array([x[max(0, i - h): i + h + 1].mean() for i in range(len(x))])


def _noise_sigma(x: np.ndarray) -> float:
    """Robust std of the epoch-to-epoch noise: MAD of the residuals from the 3-epoch average."""
    if len(x) < 5:
        return 0.0
    r = (x - _smooth(x))[1:-1]
    # For i.i.d. noise the residual x_i - mean(x_i-1..x_i+1) has std sqrt(6)/3 ~ 0.816 sigma.
    return float(1.4826 * np.median(np.abs(r - np.median(r))) / 0.816)


def _tail(x: np.ndarray, k: int = 3) -> float:
    return float(np.median(x[-k:]))


def _spikes(tr: np.ndarray) -> list[int]:
    """Indices t whose train loss jumps well above epoch t-1's (see the SPIKE_* thresholds)."""
    if len(tr) < 3:
        return []
    d = np.diff(tr)
    noise = float(np.median(np.abs(d)))
    scale = float(np.max(tr))
    return [t + 1 for t, dt in enumerate(d)
            if tr[t + 1] > tr[t] * (1 + SPIKE_JUMP) and dt > SPIKE_NOISE * noise and dt > SPIKE_SCALE * scale]


def _accuracy_key(c: _Curves) -> Optional[str]:
    return "train_accuracy" if c.has("train_accuracy") else None


# ---------------------------------------------------------------- rules


def _divergence(c: _Curves, cfg: _Cfg, lr: Optional[float]) -> Optional[Finding]:
    bad = c.first_bad()
    if bad is None:
        return None
    i, key, value = bad
    what = "NaN" if math.isnan(value) else ("infinite" if math.isinf(value) else "non-finite")
    before = (f"; the last finite train_loss was {c.col('train_loss')[i - 1]:.4g} at epoch {c.epoch[i - 1]}"
              if i > 0 and math.isfinite(c.col("train_loss")[i - 1]) else "")
    at_lr = f" with lr {c.col('lr')[i]:.3g}" if math.isfinite(c.col("lr")[i]) else ""
    remedies = []
    if lr:
        remedies.append(f"optim.lr={_fmt(lr / 10)}")
    if cfg.get("train.clip_grad_norm") is None:
        remedies.append("train.clip_grad_norm=1.0")
    return Finding("divergence", f"Training diverged at epoch {c.epoch[i]}{at_lr}: {key} became {what}{before}.",
                   int(c.epoch[i]), remedies)


def _lr_too_high(c: _Curves, cfg: _Cfg, lr: Optional[float]) -> Optional[Finding]:
    if c.n < 3 or not c.has("train_loss"):
        return None
    tr = c.col("train_loss")
    spikes = _spikes(tr)
    d = np.diff(tr)
    ups = [t + 1 for t, dt in enumerate(d)
           if tr[t + 1] > tr[t] * (1 + UP_STEP) and dt > SPIKE_SCALE * float(np.max(tr)) / 2]
    rising = c.n >= 4 and _tail(tr) >= tr[0] * RISING
    oscillating = len(ups) >= 2 and len(ups) >= OSCILLATING * (c.n - 1)
    if rising:
        why = (f"training loss rose from {tr[0]:.4g} at epoch {c.epoch[0]} to {_tail(tr):.4g} "
               f"(median of the last 3 epochs) instead of falling")
        onset = int(c.epoch[0])
    elif len(spikes) >= 2 or oscillating:
        n_up = len(set(ups) | set(spikes))
        why = (f"training loss went up in {n_up} of {c.n - 1} epoch steps"
               f" (first at epoch {c.epoch[min(ups + spikes)]}), oscillating instead of settling")
        onset = int(c.epoch[min(ups + spikes)])
    else:
        return None
    remedies = []
    if lr:
        remedies.append(f"optim.lr={_fmt(lr / 3)}")
    if cfg.get("train.clip_grad_norm") is None:
        remedies.append("train.clip_grad_norm=1.0")
    if not rising and cfg.get("schedule.name") == "constant":
        remedies.append("schedule.name=cosine")  # decays the lr, so late epochs settle
    lr_text = f" at lr {lr:.3g}" if lr else ""
    return Finding("lr_too_high", f"The learning rate looks too high{lr_text}: {why}.", onset, remedies)


def _instability(c: _Curves, cfg: _Cfg, lr: Optional[float]) -> Optional[Finding]:
    if not c.has("train_loss"):
        return None
    tr = c.col("train_loss")
    spikes = _spikes(tr)
    if not spikes:
        return None
    worst = max(spikes, key=lambda t: tr[t] / tr[t - 1])
    listed = ", ".join(str(c.epoch[t]) for t in spikes[:5]) + (" ..." if len(spikes) > 5 else "")
    remedies = []
    clip = cfg.get("train.clip_grad_norm")
    remedies.append(f"train.clip_grad_norm={_fmt(clip / 2 if clip else 1.0)}")
    if lr:
        remedies.append(f"optim.lr={_fmt(lr / 2)}")
    bs = cfg.get("train.batch_size")
    if isinstance(bs, int) and bs < 4096:
        remedies.append(f"train.batch_size={bs * 2}")  # less gradient noise per step
    return Finding(
        "instability",
        f"Training loss spiked at epoch{'s' if len(spikes) > 1 else ''} {listed}; the largest jump, at epoch "
        f"{c.epoch[worst]}, went from {tr[worst - 1]:.4g} to {tr[worst]:.4g} "
        f"({tr[worst] / tr[worst - 1] - 1:.0%} up).",
        int(c.epoch[spikes[0]]), remedies)


def _overfitting(c: _Curves, cfg: _Cfg) -> Optional[Finding]:
    if c.n < 5 or not (c.has("train_loss") and c.has("val_loss")):
        return None
    tr, va = c.col("train_loss"), c.col("val_loss")
    sv, st = _smooth(va), _smooth(tr)
    i = int(np.argmin(sv))  # onset: the (smoothed) val-loss minimum
    if c.n - 1 - i < OVERFIT_MIN_AFTER:
        return None
    end_val, end_tr = _tail(va), _tail(tr)
    rise = end_val - sv[i]
    if rise < max(OVERFIT_RISE * abs(sv[i]), OVERFIT_NOISE_SIGMAS * _noise_sigma(va)):
        return None
    if not end_tr < st[i] - TRAIN_STILL_FALLING * abs(st[i]):
        return None
    gap_on, gap_end = sv[i] - st[i], end_val - end_tr
    if gap_end <= gap_on:
        return None
    onset = int(c.epoch[i])
    acc = ""
    if c.has("val_accuracy"):
        vacc = c.col("val_accuracy")
        acc = f"; val accuracy {vacc[i]:.3f} then, {_tail(vacc):.3f} at the end"
    msg = (f"Overfitting from epoch {onset}: validation loss rose {rise / abs(sv[i]):.0%} from its minimum "
           f"{sv[i]:.4g} to {end_val:.4g} by epoch {c.epoch[-1]} while training loss fell from {st[i]:.4g} "
           f"to {end_tr:.4g}, widening the val-train gap from {gap_on:.4g} to {gap_end:.4g}{acc}.")
    return Finding("overfitting", msg, onset, _overfit_remedies(cfg, onset, int(c.epoch[-1])))


def _overfit_remedies(cfg: _Cfg, onset: int, last: int) -> list[str]:
    r = []
    if cfg.get("train.early_stopping.patience") is None:
        r.append("train.early_stopping.patience=3")
    if onset < max(int(cfg.get("train.epochs") or 0), last):
        r.append(f"train.epochs={onset}")
    l2 = cfg.get("regularize.l2") or 0.0
    r.append(f"regularize.l2={_fmt(l2 * 10 if l2 > 0 else 1e-4)}")
    drop = cfg.get("model.dropout") or 0.0
    new_drop = min(round(drop + 0.2, 3), 0.5)  # above 0.5 dropout mostly slows learning
    if new_drop > drop:
        r.append(f"model.dropout={_fmt(new_drop)}")
    r += _augment_remedies(cfg)
    smaller = _resize_model(cfg, grow=False)
    if smaller:
        r.append(smaller)
    return r


def _augment_remedies(cfg: _Cfg) -> list[str]:
    """Augmentations that fit the dataset, among those still off (images only)."""
    name = cfg.get("data.name")
    if name not in IMAGE_SETS:
        return []
    if name in ("mnist", "kmnist"):  # digits/characters: no flips, small shifts and turns
        wanted = {"shift": 0.1, "rotate": 10.0}
    elif name == "fashion-mnist":    # garments are left-right symmetric
        wanted = {"shift": 0.1, "hflip": True}
    elif name in ("cifar10", "cifar100"):
        wanted = {"crop_padding": 4, "hflip": True}
    else:
        wanted = {"crop_padding": max(1, int(cfg.get("data.image_size") or 64) // 8), "hflip": True}
    return [f"regularize.augment.{k}={_fmt(v)}" for k, v in wanted.items()
            if not cfg.get(f"regularize.augment.{k}")]


def _resize_model(cfg: _Cfg, grow: bool) -> Optional[str]:
    """A bigger (grow) or smaller version of a built-in model, as one override."""
    name = cfg.get("model.name")
    if name == "mlp":
        hidden = list(cfg.get("model.hidden") or [128])
        if grow:  # wider, and one layer deeper when it has a single hidden layer
            new = [min(2 * w, 4096) for w in hidden]
            new = new * 2 if len(new) == 1 else new
        else:
            new = [max(w // 2, 8) for w in hidden]
        return f"model.hidden={_fmt(new)}" if new != hidden else None
    if name == "cnn":
        ch = list(cfg.get("model.channels") or [16, 32])
        new = [min(2 * w, 1024) for w in ch] if grow else [max(w // 2, 4) for w in ch]
        return f"model.channels={_fmt(new)}" if new != ch else None
    if name == "resnet":
        w = int(cfg.get("model.width") or 16)
        new = min(2 * w, 256) if grow else max(w // 2, 4)
        return f"model.width={new}" if new != w else None
    return None  # a custom model: its size is the user's kwargs


def _underfitting(c: _Curves, cfg: _Cfg) -> Optional[Finding]:
    if c.n < 4 or not c.has("train_loss"):
        return None
    tr = c.col("train_loss")
    st = _smooth(tr)
    h = c.n // 2
    gain_tr = (st[h] - st[-1]) / abs(st[h])
    if gain_tr >= UNDERFIT_FLAT:
        return None
    if c.has("val_loss"):
        sv = _smooth(c.col("val_loss"))
        gain_va = (sv[h] - sv[-1]) / abs(sv[h])
        if gain_va >= UNDERFIT_FLAT:
            return None
        val_text = f" and validation loss by {-gain_va:+.1%}"
    else:
        val_text = ""
    acc_key = _accuracy_key(c)
    if acc_key:
        acc = float(np.max(c.col(acc_key)[-3:]))
        if acc >= UNDERFIT_ACC:
            return None
        high = f"train accuracy is only {acc:.3f}"
    else:
        if _tail(tr) <= UNDERFIT_LOSS_RATIO * tr[0]:
            return None
        high = f"train loss {_tail(tr):.4g} is still {_tail(tr) / tr[0]:.0%} of epoch 1's {tr[0]:.4g}"
    msg = (f"Underfitting: over the last {c.n - h} epochs training loss changed by {-gain_tr:+.1%}{val_text}, "
           f"and {high}.")
    r = []
    bigger = _resize_model(cfg, grow=True)
    if bigger:
        r.append(bigger)
    # Regularisation that holds the model back is the next suspect.
    for key in ("regularize.l2", "regularize.l1"):
        v = cfg.get(key) or 0.0
        if v > 0:
            r.append(f"{key}={_fmt(v / 10)}")
    drop = cfg.get("model.dropout") or 0.0
    if drop > 0:
        r.append(f"model.dropout={_fmt(max(round(drop - 0.2, 3), 0.0))}")
    if cfg.get("optim.name") in ("gd", "sgd") and not cfg.get("optim.momentum"):
        r.append("optim.name=adam")
    return Finding("underfitting", msg, None, r)


def _lr_too_low(c: _Curves, cfg: _Cfg, lr: Optional[float]) -> Optional[Finding]:
    if c.n < 5 or not c.has("train_loss"):
        return None
    tr = c.col("train_loss")
    x = c.epoch.astype(float)
    slope, r2 = _line(x, tr)
    h = c.n // 2
    slope_late, _ = _line(x[h:], tr[h:])
    rel = -slope / float(np.mean(tr))
    total = (tr[0] - _tail(tr)) / abs(tr[0])
    if not (slope < 0 and r2 >= SLOW_R2 and rel < SLOW_REL_SLOPE and total < SLOW_TOTAL
            and slope_late <= SLOW_KEEPS_PACE * slope):
        return None
    acc_key = _accuracy_key(c)
    if acc_key and float(np.max(c.col(acc_key)[-3:])) >= SLOW_MAX_ACC:
        return None
    msg = (f"The learning rate looks too low{f' ({lr:.3g})' if lr else ''}: training loss fell almost linearly "
           f"(R^2 {r2:.2f}) by only {rel:.2%} of its value per epoch, {total:.0%} in {c.n} epochs, "
           f"and was still falling at epoch {c.epoch[-1]}.")
    r = []
    if lr:
        r.append(f"optim.lr={_fmt(lr * (10 if rel < VERY_SLOW else 3))}")
    epochs = cfg.get("train.epochs") or int(c.epoch[-1])
    r.append(f"train.epochs={2 * max(int(epochs), int(c.epoch[-1]))}")
    return Finding("lr_too_low", msg, None, r)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and R^2 of y against x."""
    if len(x) < 2:
        return 0.0, 0.0
    slope, icpt = np.polyfit(x, y, 1)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - (slope * x + icpt)) ** 2)) / ss_tot if ss_tot > 0 else 0.0
    return float(slope), r2


def _best_epoch(full: _Curves, cfg: _Cfg) -> Finding:
    c = full.finite_prefix()  # after a divergence only the epochs before it are candidates
    split, _, metric = str(cfg.get("train.monitor") or "val.loss").partition(".")
    key = f"{split}_{metric}"
    # Fall back along the keys every classification/regression run has.
    for k in (key, "val_loss", "val_accuracy", "train_loss"):
        if c.has(k):
            key = k
            break
    else:
        return Finding("best_epoch", "No epoch has a finite loss, so there is no best epoch.")
    v = c.col(key)
    maximise = "acc" in key or key.endswith(("_f1", "_auc", "_r2", "_roc_auc"))
    filled = np.where(np.isfinite(v), v, -np.inf if maximise else np.inf)
    i = int(np.argmax(filled) if maximise else np.argmin(filled))  # ties -> earliest epoch
    extra = [f"{k} {c.col(k)[i]:.4g}" for k in ("val_loss", "val_accuracy", "train_loss")
             if k != key and c.has(k) and math.isfinite(c.col(k)[i])]
    msg = (f"Best epoch {c.epoch[i]} of {full.epoch[-1]} by {key} ({v[i]:.4g})"
           + (f", with {', '.join(extra)}." if extra else "."))
    remedies = []
    # Still improving at the very end: more epochs would likely help.
    if i == c.n - 1 and c.n >= 3 and full.first_bad() is None:
        prev = float(np.nanmin(filled[:-2]) if not maximise else np.nanmax(filled[:-2]))
        gain = (prev - v[i]) if not maximise else (v[i] - prev)
        if gain > 0.01 * abs(v[i]):
            epochs = cfg.get("train.epochs") or int(c.epoch[-1])
            remedies.append(f"train.epochs={2 * max(int(epochs), int(c.epoch[-1]))}")
            msg = msg[:-1] + ", and it was still improving."
    return Finding("best_epoch", msg, int(c.epoch[i]), remedies)


def _healthy(c: _Curves) -> Finding:
    parts = []
    for k in ("train_loss", "val_loss"):
        if c.has(k):
            v = c.col(k)
            parts.append(f"{k.replace('_', ' ')} went from {v[0]:.4g} to {v[-1]:.4g}")
    if c.has("val_accuracy"):
        parts.append(f"val accuracy reached {np.nanmax(c.col('val_accuracy')):.4g}")
    body = ", ".join(parts) if parts else "no curve shows a problem"
    return Finding("healthy", f"No problem found over {c.n} epoch{'s' if c.n != 1 else ''}: {body}.")


# ---------------------------------------------------------------- values


def _fmt(v: Any) -> str:
    """A value as YAML that reads back with its type: 1e-4 -> '1.0e-4' (PyYAML needs the dot)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(x) for x in v) + "]"  # no spaces: one shell word
    s = f"{float(v):.3g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant if '.' in mant else mant + '.0'}e{int(exp):+d}"
    elif "." not in s and "n" not in s:
        s += ".0"
    return s
