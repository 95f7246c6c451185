"""trainlab search, packed, against the same trials one after another and against Optuna's n_jobs=2.

    python bench/search_bench.py                 # 16-point lr grid and 64-point lr x weight-decay grid, 2 epochs
    python bench/search_bench.py --quick         # 4- and 8-point grids on 2,000 examples, 1 epoch: checks it runs
    python bench/search_bench.py --grids 16 --out bench/results
    python bench/search_bench.py --repeats 3,1    # 16-point grid 3 times, interleaved (medians); 64-point once

Every contender runs the same grid of the seed MLP (examples/seed_mlp.yaml, Fashion-MNIST) in a
fresh process, timed from process start to exit: data loading, evaluation and bookkeeping included.

- packed:     trainlab search -c examples/seed_mlp.yaml -s SPACE --strategy grid            (the default)
- sequential: trainlab search ... --no-packed   (the same trials through train(), one after another)
- optuna-n2:  what a user writes today: optuna.create_study(sampler=GridSampler(...)).optimize(
              objective, n_jobs=2), the objective calling trainlab.train(config) (one torch thread
              per trial, two trials at a time on the two cores)
- packed-no-step (with --bound; not a result): the packed search with the parameter update removed
              (StackedOptimizer.step does nothing, so nothing learns). Every other part is the packed
              search's own: imports, data, forward, backward, evaluation, files, report. Any packed
              search that trains does at least this work, so its wall time bounds what packing can
              reach on this machine with torch's kernels.

Each trainlab contender's wall time is split into time inside training loops (the epochs' own
"seconds" in every trial's metrics.jsonl; a pack's loop counted once) and everything outside them.

Writes OUT/search_bench.json (settings, every contender's wall time, best trial and its validation
accuracy, the environment) and OUT/search_table.md, and prints the table. The best trial must be
the same for all three (the table says whether it is). Never quote a --quick run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "examples" / "seed_mlp.yaml"
SPACES = {
    16: {"optim.lr": {"loguniform": [1.0e-3, 0.3], "grid": 16}},
    64: {"optim.lr": {"loguniform": [1.0e-3, 0.3], "grid": 8},
         "optim.weight_decay": {"loguniform": [1.0e-6, 1.0e-2], "grid": 8}},
}
QUICK_SPACES = {
    16: {"optim.lr": {"loguniform": [1.0e-3, 0.3], "grid": 4}},
    64: {"optim.lr": {"loguniform": [1.0e-3, 0.3], "grid": 4},
         "optim.weight_decay": {"loguniform": [1.0e-6, 1.0e-2], "grid": 2}},
}
CONTENDERS = ("packed", "sequential", "optuna-n2")
BOUND = "packed-no-step"  # --bound: a lower bound on a packed search's wall time, not a contender


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trainlab search: packed vs one after another vs Optuna n_jobs=2")
    p.add_argument("--quick", action="store_true", help="4- and 8-point grids, 2,000 examples, 1 epoch")
    p.add_argument("--grids", default="16,64", help="which grids: 16 (lr) and/or 64 (lr x weight decay)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 2; quick 1)")
    p.add_argument("--repeats", default="1",
                   help="runs of each contender, interleaved (packed, sequential, optuna, packed, ...): one number, "
                        "or one per grid (e.g. 3,1); the table quotes the median wall time")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated subset of " + ", ".join(CONTENDERS))
    p.add_argument("--bound", action="store_true",
                   help=f"also run {BOUND}: the packed search without its parameter update (a bound, not a result)")
    p.add_argument("--out", default=str(BENCH / "results"), help="folder for search_bench.json and search_table.md")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: optuna-n2 or the bound's process
    p.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args) -> list[str]:
    out = [f"train.epochs={args.epochs}", "train.progress=none"]
    if args.quick:
        out += ["data.limit=2000", "eval.limit=1000"]
    return out


def run_timed(cmd: list[str], what: str) -> tuple[float, dict]:
    """Run one contender's process: (wall seconds from start to exit, the JSON on its last stdout line)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def search_args(space: Path, out: Path, ovr: list[str], packed: bool) -> list[str]:
    args = ["search", "-c", str(CONFIG), "-s", str(space), "--strategy", "grid", "--out", str(out), "--json"]
    return args + ([] if packed else ["--no-packed"]) + ovr


def run_trainlab(space: Path, out: Path, ovr: list[str], contender: str) -> dict:
    if contender == BOUND:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", BOUND,
               "--worker-args", json.dumps(search_args(space, out, ovr, packed=True))]
    else:
        cmd = [sys.executable, "-m", "trainlab", *search_args(space, out, ovr, packed=contender == "packed")]
    seconds, result = run_timed(cmd, " ".join(cmd))
    import csv
    with open(out / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    keys = list(result["best"]["params"])
    values = [{"params": {k: float(r[k]) for k in keys}, "value": float(r["value"]) if r["value"] else None}
              for r in rows]
    return {"seconds": seconds, "loop_seconds": loop_seconds(rows), "best_params": result["best"]["params"],
            "best_value": result["best"]["value"], "trials": result["trials"], "values": values,
            "command": " ".join(cmd)}


def loop_seconds(rows: list[dict]) -> float:
    """Seconds spent inside training loops: every trial's epoch "seconds" (metrics.jsonl), summed.

    A pack's members each carry the whole pack's epoch time, so a member's share is 1/pack_size
    (exact for the benchmark's grids, where every member runs every epoch)."""
    total = 0.0
    for r in rows:
        lines = (Path(r["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        total += sum(json.loads(line)["seconds"] for line in lines if line.strip()) / int(r["pack_size"] or 1)
    return total


def no_step_worker(argv: list[str]) -> int:
    """`trainlab search ARGV` with the packed update removed: a lower bound on its wall time."""
    from trainlab import cli, packed

    packed.StackedOptimizer.step = lambda self, params, grads: None
    return cli.main(argv)


def run_optuna(space: Path, out: Path, ovr: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "optuna-n2",
           "--worker-args", json.dumps({"space": str(space), "out": str(out), "overrides": ovr})]
    seconds, result = run_timed(cmd, "the optuna-n2 contender")
    return {"seconds": seconds, **result, "command": "optuna GridSampler + study.optimize(objective, n_jobs=2)"}


def optuna_worker(spec: dict) -> None:
    """The contender a user writes today: Optuna drives trainlab.train(), two trials at a time."""
    import optuna
    import torch
    import trainlab
    from trainlab.search import load_space, trial_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # two trials share the two cores
    cfg = trainlab.load_config(CONFIG, spec["overrides"] + ["train.threads=1"])
    params = load_space(spec["space"])
    grid = {p.key: p.grid_values() for p in params.values()}
    out = Path(spec["out"])

    def objective(trial):
        values = {p.key: trial.suggest_float(p.key, p.low, p.high, log=p.log) for p in params.values()}
        run = trainlab.train(trial_config(cfg, values), out=out / f"{trial.number:04d}")
        return run.metrics["val"]["accuracy"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(objective, n_jobs=2, catch=(trainlab.TrainlabError,))
    best = study.best_trial
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    print(json.dumps({"best_params": best.params, "best_value": best.value, "trials": len(done),
                      "values": [{"params": t.params, "value": t.value} for t in done]}))


def environment() -> dict:
    import torch

    def git(*a: str):
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "load_average": os.getloadavg()}


def _key(params: dict) -> tuple:
    return tuple(sorted((k, round(float(v), 12)) for k, v in params.items()))


def same_best(rows: list[dict]) -> bool:
    """Whether every contender's best trial is the same grid point. Ties (several points with the
    best value, as accuracy on a few thousand examples can give) count as the same when the
    contenders share one of the tied points."""
    tied = []
    for r in rows:
        best = max(v["value"] for v in r["values"] if v["value"] is not None)
        tied.append({_key(v["params"]) for v in r["values"] if v["value"] == best} | {_key(r["best_params"])})
    return bool(set.intersection(*tied))


def table(result: dict) -> str:
    env = result["env"]
    lines = [f"trainlab search benchmark, {env['date']}, `{env['command']}`, {env['cores']} cores, "
             f"torch {env['torch']} ({env['torch_threads']} threads)"
             + (" (quick: do not quote)" if result["quick"] else ""),
             "", "| grid | contender | wall s, median (min-max) | in training loops s | outside them s | vs sequential "
                 "| best trial | best val accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for grid in result["grids"]:
        rows = grid["contenders"]
        base = next((r["seconds"] for r in rows if r["name"] == "sequential"), None)
        for r in rows:
            ratio = f"{base / r['seconds']:.2f}x" if base else "–"
            shown = ", ".join(f"{k}={v:.4g}" for k, v in r["best_params"].items())
            wall = f"{r['seconds']:.1f} ({r['seconds_min']:.1f}-{r['seconds_max']:.1f})"
            loop, outside = (f"{r[k]:.1f}" if r.get(k) is not None else "–" for k in ("loop_seconds", "outside_seconds"))
            if r["name"] == BOUND:
                shown, accuracy = "(learns nothing: a bound)", "–"
            else:
                accuracy = f"{r['best_value']:.4f}"
            lines.append(f"| {grid['name']} | {r['name']} | {wall} | {loop} | {outside} | {ratio} | {shown} "
                         f"| {accuracy} |")
        compared = [r for r in rows if r["name"] != BOUND]
        lines.append(f"| {grid['name']} | same best trial for all | {'yes' if grid['same_best'] else 'NO'} | | | | | |")
        pair = [r for r in rows if r["name"] in ("packed", "sequential")]
        if len(pair) == 2 and len(compared) > 2:
            lines.append(f"| {grid['name']} | same best trial, packed and sequential | "
                         f"{'yes' if same_best(pair) else 'NO'} | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "optuna-n2":
        optuna_worker(json.loads(args.worker_args))
        return 0
    if args.worker == BOUND:
        return no_step_worker(json.loads(args.worker_args))
    args.epochs = args.epochs or (1 if args.quick else 2)
    contenders = [c for c in args.contenders.split(",") if c] + ([BOUND] if args.bound else [])
    spaces = QUICK_SPACES if args.quick else SPACES
    result = {"quick": args.quick, "epochs": args.epochs, "overrides": overrides(args), "env": environment(),
              "grids": []}
    import yaml
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        sizes = [int(g) for g in args.grids.split(",")]
        repeats = [int(r) for r in str(args.repeats).split(",")]
        repeats = repeats * len(sizes) if len(repeats) == 1 else repeats
        if len(repeats) != len(sizes):
            raise SystemExit(f"--repeats {args.repeats}: give one number or one per grid ({len(sizes)})")
        for size, n_repeats in zip(sizes, repeats):
            space = Path(tmp) / f"space{size}.yaml"
            space.write_text(yaml.safe_dump(spaces[size]))
            n = 1
            for spec in spaces[size].values():
                n *= spec.get("grid", 1)
            name = f"{n}-point {' x '.join(k.split('.')[-1] for k in spaces[size])}"
            runs: dict[str, list[dict]] = {c: [] for c in contenders}
            for repeat in range(n_repeats):  # interleaved: a slow spell of the machine hits every contender
                for contender in contenders:
                    out = Path(tmp) / f"{size}-{contender}-{repeat}"
                    print(f"{name}: {contender} (run {repeat + 1} of {n_repeats}) ...", file=sys.stderr, flush=True)
                    if contender == "optuna-n2":
                        runs[contender].append(run_optuna(space, out, overrides(args)))
                    else:
                        runs[contender].append(run_trainlab(space, out, overrides(args), contender))
            rows = []
            for contender, done in runs.items():
                seconds = sorted(r["seconds"] for r in done)
                loops = [r["loop_seconds"] for r in done if "loop_seconds" in r]
                rows.append({"name": contender, **done[0], "seconds": statistics.median(seconds),
                             "seconds_min": seconds[0], "seconds_max": seconds[-1],
                             "runs": [r["seconds"] for r in done],
                             "loop_seconds": statistics.median(loops) if loops else None,
                             "outside_seconds": statistics.median(r["seconds"] - r["loop_seconds"] for r in done)
                             if loops else None,
                             "same_best_every_run": len({_key(r["best_params"]) for r in done}) == 1})
            # the bound learns nothing: its "best" trial is arbitrary and takes no part in the comparison
            result["grids"].append({"name": name, "space": spaces[size], "repeats": n_repeats, "contenders": rows,
                                    "same_best": same_best([r for r in rows if r["name"] != BOUND])})
    out = Path(args.out)
    from trainlab.runs import atomic_write_json, atomic_write_text
    atomic_write_json(out / "search_bench.json", result)
    text = table(result)
    atomic_write_text(out / "search_table.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
