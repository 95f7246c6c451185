"""Several processes on one CPU: 1 process x 2 threads against 2 processes x 1 thread (trainlab train --nproc 2).

    python bench/ddp_bench.py                 # the seed MLP on all of Fashion-MNIST, 2 epochs, 3 interleaved repeats
    python bench/ddp_bench.py --quick         # 6,000 examples, 1 epoch, 1 repeat: checks the bench runs
    python bench/ddp_bench.py --gpu           # on CUDA: the plain run against --nproc 1 (and --nproc 2 on 2 GPUs)

Both contenders are whole CLI runs of the same config, alternating over the repeats. Seconds per
epoch are read from metrics.jsonl (the loop's own timing of the training pass, evaluation
excluded), median over the repeats of each run's last epoch; start-up (imports, torchrun's
rendezvous) is reported separately as wall time minus the summed epoch seconds. Writes
OUT/ddp_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from run import environment  # noqa: E402  (bench/run.py: where and how the figures were taken)

# name -> (config overrides, CLI flags, environment)
CPU = {
    "1 process x 2 threads": (["train.threads=2"], [], {"OMP_NUM_THREADS": "2"}),
    "2 processes x 1 thread": (["train.threads=1"], ["--nproc", "2"], {"OMP_NUM_THREADS": "1"}),
}
# At one GPU trainlab does not wrap the model (DDP only with several processes): what the launcher
# costs. With two GPUs, DDP's all-reduce over NCCL too.
GPU = {
    "1 process": (["train.device=cuda"], [], {}),
    "torchrun, 1 process": (["train.device=cuda"], ["--nproc", "1"], {}),
    "torchrun, 2 processes": (["train.device=cuda"], ["--nproc", "2"], {}),
}
CONTENDERS = dict(CPU)


def run_once(name: str, overrides: list[str], out: Path) -> dict:
    keys, flags, env = CONTENDERS[name]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainlab", "train", "-c", str(ROOT / "examples/seed_mlp.yaml"),
                           *overrides, *keys, "train.progress=none", "--out", str(out), *flags, "--json"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    epochs = [r["seconds"] for r in rows]
    return {"epoch_seconds": epochs, "wall_seconds": wall, "startup_seconds": wall - summary["seconds"],
            "test_accuracy": summary["metrics"]["test"]["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu", action="store_true", help="the CUDA contenders (GPU) instead of the CPU ones")
    p.add_argument("--out", default=str(BENCH / "results"))
    a = p.parse_args()
    if a.gpu:
        import torch
        CONTENDERS.clear()
        CONTENDERS.update({k: v for k, v in GPU.items() if "2 processes" not in k or torch.cuda.device_count() > 1})
    overrides = ["data.limit=6000", "train.epochs=1"] if a.quick else ["train.epochs=2"]
    repeats = 1 if a.quick else a.repeats
    results: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for k, name in enumerate(CONTENDERS):  # interleaved: drift of the machine hits all alike
                results[name].append(run_once(name, overrides, Path(tmp) / f"repeat{i}-contender{k}"))
    table = {}
    for name, runs in results.items():
        table[name] = {"epoch_seconds_median": statistics.median(r["epoch_seconds"][-1] for r in runs),
                       "startup_seconds_median": statistics.median(r["startup_seconds"] for r in runs),
                       "test_accuracy": [r["test_accuracy"] for r in runs], "runs": runs}
    first, last = (table[name]["epoch_seconds_median"] for name in (list(CONTENDERS)[0], list(CONTENDERS)[-1]))
    report = {"environment": environment(sys.argv), "overrides": overrides, "repeats": repeats, "contenders": table,
              "ratio_last_over_first": last / first}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("ddp_bench_gpu.json" if a.gpu else "ddp_bench.json")).write_text(json.dumps(report, indent=2) + "\n")
    for name, row in table.items():
        print(f"{name:24s} {row['epoch_seconds_median']:7.2f} s/epoch  start-up {row['startup_seconds_median']:5.1f} s"
              f"  test accuracy {row['test_accuracy']}")
    print(f"{list(CONTENDERS)[-1]} / {list(CONTENDERS)[0]}: {last / first:.2f}x the seconds per epoch")


if __name__ == "__main__":
    main()
