"""Step budgets for image and table models: train.steps with a metrics row every eval.every steps,
batches drawn from one pass over the data after another, resumable mid-period."""

import math

import pytest
import torch

from trainlab import data
from trainlab.config import build_config
from trainlab.data.loader import Batches, PeriodBatches, make_batches
from trainlab.errors import Interrupted
from trainlab.report.plots import x_axis
from trainlab.train import train

from conftest import ctrl_c_at, quick_config
from test_resume import STATEFUL

CPU = torch.device("cpu")


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_second")} for r in rows]


def test_periods_take_the_data_passes_in_order_and_leave_out_the_partial_batch():
    """Real digits: 6 periods of 11 steps walk through the passes of an epoch-by-epoch run."""
    cfg = build_config(quick_config(train={"steps": 66, "batch_size": 32}, eval={"every": 11}))
    splits = data.load(cfg)
    periods = make_batches(splits, "train", 32, CPU, torch.float32, cfg, train=True)
    assert isinstance(periods, PeriodBatches) and len(periods) == 11
    per_pass = len(splits.train) // 32
    assert periods.per_pass == per_pass and len(splits.train) % 32  # so there is a partial batch to leave out
    stepped = [batch for period in range(1, 7) for batch in periods.epoch(cfg.train.seed, period)]
    assert len(stepped) == 66 and all(len(y) == 32 for _, y in stepped)
    assert periods.batch_sizes() == [32] * 11
    # The same split batched by epochs: pass p's first per_pass batches, p = 1, 2, ...
    epochs = Batches(splits.train, splits, 32, CPU, shuffle=True)
    expected = [batch for p in range(1, 66 // per_pass + 2) for batch in list(epochs.epoch(cfg.train.seed, p))[:per_pass]]
    for (x, y), (xe, ye) in zip(stepped, expected):
        assert torch.equal(x, xe) and torch.equal(y, ye)
    # Mid-period: the batches from step 4 of period 3 on are the rest of that period.
    assert all(torch.equal(a[1], b[1]) for a, b in zip(periods.epoch(cfg.train.seed, 3, 4), stepped[2 * 11 + 4:33]))
    # Streamed through a DataLoader, the same batches.
    streamed_cfg = build_config({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "loader": "stream", "workers": 0}})
    streamed = make_batches(splits, "train", 32, CPU, torch.float32, streamed_cfg, train=True)
    assert streamed.data.stream
    streamed_batches = [b for period in range(1, 7) for b in streamed.epoch(cfg.train.seed, period)]
    assert len(streamed_batches) == 66
    for (x, y), (xs, ys) in zip(stepped, streamed_batches):
        assert torch.equal(x, xs) and torch.equal(y, ys)


def test_a_step_budget_trains_an_image_model_with_a_row_per_evaluation(tmp_path):
    cfg = build_config(quick_config(train={"steps": 120, "batch_size": 32}, eval={"every": 40},
                                    schedule={"name": "cosine", "min_lr": 1e-4}))
    result = train(cfg, out=tmp_path / "run")
    rows = result.history
    assert [r["step"] for r in rows] == [40, 80, 120] and [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["examples"] for r in rows] == [40 * 32, 80 * 32, 120 * 32]
    assert all(r["examples_per_second"] > 0 for r in rows)
    assert result.summary["stopped_because"] == "steps" and result.summary["epochs_run"] == 3
    # The cosine schedule spans the 120 steps, not 3 epochs of the data: it ends at min_lr.
    assert math.isclose(rows[-1]["lr"], 1e-4, rel_tol=1e-9)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] and result.metrics["test"]["accuracy"] > 0.5
    steps, label = x_axis(rows)  # the report's curves: against optimiser steps
    assert steps.tolist() == [40, 80, 120] and label == "optimiser step"


def test_ctrl_c_mid_period_then_resume_equals_uninterrupted(tmp_path):
    """Momentum, warm-up + cosine, dropout, augmentation and shuffling across a data pass's end."""
    cfg = build_config(quick_config(**{**STATEFUL, "train": {"steps": 90, "batch_size": 32}},
                                    eval={"every": 30}))
    reference = train(cfg, out=tmp_path / "reference")
    per_pass = len(data.load(cfg).train) // 32
    step = per_pass + 3 - 30  # period 2, three steps into the second pass over the data
    assert 0 < step < 30
    with pytest.raises(Interrupted):
        train(cfg, out=tmp_path / "cut", on_step_end=ctrl_c_at(2, step))
    resumed = train(None, resume=tmp_path / "cut")
    assert _without_timing(resumed.history) == _without_timing(reference.history)
    assert resumed.metrics == reference.metrics
    for a, b in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)


def test_eval_every_must_divide_the_budget_for_tables_too():
    with pytest.raises(Exception, match=r"eval.every=40 does not divide train.steps=100: use train.steps=80 or 120"):
        build_config({"data": {"name": "wine"}, "train": {"steps": 100}, "eval": {"every": 40}})


def test_a_search_over_a_step_budget_trains_trial_by_trial_not_packed():
    from trainlab.packed import packable
    mlp = quick_config()
    assert packable(build_config(mlp))
    assert not packable(build_config({**mlp, "train": {**mlp["train"], "steps": 40}, "eval": {"every": 20}}))
