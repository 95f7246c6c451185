"""The trial runner: asks Optuna for trials, trains them (packed, or one by one through train()), tells results."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..config import Config
from ..errors import ConfigError, DivergedError, Interrupted, TrainlabError
from .options import Options
from .spaces import Param, fmt, trial_config
from .storage import Heartbeat
from .study import is_retry, is_surplus, originals, study_tell, suggest

MAX_PACK = 32              # default cap on members per pack (beyond, the matmuls stop getting cheaper)
PACK_MEMORY = 2 << 30      # default cap on a pack's activation memory, bytes
TPE_PACK = 8               # TPE learns from finished trials: smaller packs by default


class Runner:
    """The worker loop: ask a pack of trials, train them (packed or one by one), tell the results."""

    def __init__(self, study, cfg: Config, params: dict[str, Param], opts: Options, out_dir: Path, splits_for,
                 heartbeat: Heartbeat, say, data_dir):
        self.study, self.cfg, self.params, self.opts = study, cfg, params, opts
        self.out_dir, self.splits_for, self.heartbeat, self.say = out_dir, splits_for, heartbeat, say
        self.data_dir = data_dir
        self.split, self.name = opts.metric.split(".", 1)

    def pack_cap(self) -> int:
        if self.opts.pack_size is not None:
            return self.opts.pack_size
        if not self.opts.packed:
            return 1
        cap = TPE_PACK if self.opts.strategy == "tpe" else MAX_PACK
        # Activation memory per member: a batch through every hidden layer, a few copies (forward,
        # backward, dropout masks), in the config's dtype; plus the evaluation batch.
        c = self.cfg
        width = sum(c.model.hidden) + 16
        batch = max(c.train.batch_size, c.eval.batch_size) if c.optim.name != "gd" else 60000
        per_member = batch * width * (8 if c.train.dtype == "float64" else 4) * 6
        return max(1, min(cap, PACK_MEMORY // max(per_member, 1)))

    def run(self) -> None:
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState
        waited = False
        while True:
            if self.heartbeat.enabled:
                fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            left = self.opts.trials - len(originals(trials))
            want = min(self.pack_cap(), len(waiting) + max(left, 0))
            if want <= 0:
                running = [t for t in trials if t.state == TrialState.RUNNING]
                if running and self.heartbeat.enabled:
                    # Another worker's trials: if it dies, its trials come back as WAITING ones.
                    if not waited:
                        self.say(f"waiting for {len(running)} trial(s) other workers run")
                        waited = True
                    time.sleep(min(self.opts.heartbeat, 5))
                    continue
                return
            asked = []
            for _ in range(want):
                trial = self.study.ask()
                self.heartbeat.add(trial._trial_id)
                if self._surplus(trial):
                    continue
                asked.append(trial)
            if asked:
                self._train(asked)

    def _surplus(self, trial) -> bool:
        """A trial asked beyond the budget (two workers asked at once), or a grid point another
        trial already covers: told FAIL and marked surplus, never trained."""
        from optuna.trial import TrialState
        frozen = self.study._storage.get_trial(trial._trial_id)
        if is_retry(frozen) or "fixed_params" in frozen.system_attrs:
            return False
        trials = self.study.get_trials(deepcopy=False)
        earlier = [t for t in originals(trials) if t.number < trial.number]
        reason = None
        if len(earlier) >= self.opts.trials:
            reason = "over the trial budget"
        elif self.opts.strategy == "grid":
            grid_id = frozen.system_attrs.get("grid_id")
            for t in trials:
                if t.number == trial.number or is_surplus(t) or t.system_attrs.get("grid_id") != grid_id:
                    continue
                final_failure = t.state == TrialState.FAIL and t.user_attrs.get("failure") not in (None, "interrupted")
                if (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING) or final_failure
                        or (t.state == TrialState.RUNNING and t.number < trial.number)):
                    reason = f"grid point already taken by trial {t.number}"
                    break
        if reason is None:
            return False
        trial.set_user_attr("surplus", reason)
        study_tell(self.study, trial, state=TrialState.FAIL)
        self.heartbeat.remove(trial._trial_id)
        return True

    def _train(self, asked: list) -> None:
        from ..packed import pack_key
        jobs = []
        for trial in asked:
            values = suggest(trial, self.params)
            try:
                cfg = trial_config(self.cfg, {**values, "train.progress": "none"},
                                   name=f"{self.cfg.name}-trial{trial.number}")
            except ConfigError as e:
                self._fail(trial, f"invalid config: {e}")
                continue
            jobs.append((trial, values, cfg))
        groups: dict[str, list] = {}
        singles = []
        for job in jobs:
            key = pack_key(job[2]) if self.opts.packed else None
            if key is None:
                singles.append(job)
            else:
                groups.setdefault(key, []).append(job)
        for key, group in groups.items():
            if len(group) == 1:
                singles += group
            else:
                self._train_pack(group)
        for job in singles:
            self._train_one(*job)

    def _run_dir(self, trial) -> Path:
        return self.out_dir / "trials" / f"{trial.number:04d}"

    def _train_pack(self, group: list) -> None:
        from optuna.trial import TrialState
        from ..packed import train_packed
        splits = self.splits_for(group[0][2])
        pruned: set[int] = set()

        def on_epoch_end(index: int, epoch: int, row: dict) -> bool:
            trial = group[index][0]
            value = row.get(f"{self.split}_{self.name}")
            if value is None or not math.isfinite(value):
                return False
            trial.report(value, epoch)
            if trial.should_prune():
                pruned.add(index)
                return True
            return False

        labels = ", ".join(str(t.number) for t, _, _ in group)
        self.say(f"trials {labels}: training {len(group)} as one pack")
        t0 = time.perf_counter()
        try:
            results = train_packed([c for _, _, c in group], outs=[self._run_dir(t) for t, _, _ in group],
                                   splits=replace(splits, test=None), on_epoch_end=on_epoch_end)
        except TrainlabError as e:
            for trial, _, _ in group:
                self._fail(trial, str(e))
            return
        seconds = time.perf_counter() - t0
        for index, ((trial, values, cfg), result) in enumerate(zip(group, results)):
            self._record(trial, values, result.summary, result.history, len(group))
            if result.summary.get("stopped_because") == "diverged":
                self._fail(trial, "diverged", values)
            elif index in pruned:
                self._tell(trial, values, TrialState.PRUNED)
            else:
                self._tell(trial, values, TrialState.COMPLETE, self._value(result.summary))
        self.say(f"trials {labels}: {seconds:.1f}s")

    def _train_one(self, trial, values: dict, cfg: Config) -> None:
        import optuna
        from optuna.trial import TrialState
        from ..train import train
        splits = self.splits_for(cfg)

        def on_epoch_end(epoch: int, row: dict) -> None:
            value = row.get(f"{self.split}_{self.name}")
            if value is not None and math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        run_dir = self._run_dir(trial)
        try:
            result = train(cfg, out=run_dir, splits=replace(splits, test=None), on_epoch_end=on_epoch_end,
                           data_dir=self.data_dir)
        except optuna.TrialPruned:
            from ..runs import RunDir
            self._record(trial, values, None, RunDir(run_dir).read_metrics(), 1)
            self._tell(trial, values, TrialState.PRUNED)
            return
        except Interrupted:
            raise  # Ctrl-C: the trial stays RUNNING; --resume (or another worker) runs it again
        except DivergedError as e:
            from ..runs import RunDir
            self._record(trial, values, None, RunDir(run_dir).read_metrics(), 1)
            self._fail(trial, f"diverged: {str(e).splitlines()[0]}", values)
            return
        except TrainlabError as e:
            self._fail(trial, str(e), values)
            return
        self._record(trial, values, result.summary, result.history, 1)
        self._tell(trial, values, TrialState.COMPLETE, self._value(result.summary))

    def _value(self, summary: dict) -> Optional[float]:
        value = ((summary.get("metrics") or {}).get(self.split) or {}).get(self.name)
        return float(value) if value is not None and math.isfinite(value) else None

    def _record(self, trial, values: dict, summary: Optional[dict], history: list[dict], pack: int) -> None:
        """What results.csv and the report need, stored with the trial (every worker sees it)."""
        key = f"{self.split}_{self.name}"
        trial.set_user_attr("run_dir", str(self._run_dir(trial)))
        trial.set_user_attr("curve", [r.get(key) for r in history])
        trial.set_user_attr("pack_size", pack)
        if summary is not None:
            trial.set_user_attr("metrics", {s: m for s, m in summary.get("metrics", {}).items() if s != "test"})
            trial.set_user_attr("seconds", summary.get("seconds"))
            trial.set_user_attr("stopped_because", summary.get("stopped_because"))
        elif history:
            trial.set_user_attr("seconds", sum(r.get("seconds", 0.0) for r in history))

    def _tell(self, trial, values: dict, state, value: Optional[float] = None) -> None:
        from optuna.trial import TrialState
        shown = "  ".join(f"{k}={fmt(v)}" for k, v in values.items())
        if state == TrialState.COMPLETE and value is None:
            self._fail(trial, f"no {self.opts.metric} in the run's summary", values)
            return
        if state == TrialState.COMPLETE:
            study_tell(self.study, trial, value)
            self.say(f"trial {trial.number}: {shown}  {self.opts.metric} {value:.4f}")
        else:
            study_tell(self.study, trial, state=state)
            self.say(f"trial {trial.number}: {shown}  {state.name.lower()}")
        self.heartbeat.remove(trial._trial_id)

    def _fail(self, trial, reason: str, values: Optional[dict] = None) -> None:
        from optuna.trial import TrialState
        trial.set_user_attr("failure", reason)
        study_tell(self.study, trial, state=TrialState.FAIL)
        shown = "  ".join(f"{k}={fmt(v)}" for k, v in (values or {}).items())
        self.say(f"trial {trial.number}: {shown}  failed: {reason.splitlines()[0]}")
        self.heartbeat.remove(trial._trial_id)
