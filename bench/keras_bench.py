"""train.backend=keras against the seed's own Keras code (its section 5.2: model.fit, batch 64), side by side.

    python bench/keras_bench.py                 # Fashion-MNIST, 5 repeats of 3 epochs per contender
    python bench/keras_bench.py --quick         # 2000 examples, 2 repeats of 2 epochs: checks the bench runs

Three contenders on the same training examples (trainlab's train split of the seed config),
interleaved A B C / C B A per repeat so that drift hits each alike, in one process on Keras'
TensorFlow backend:
- `keras_fit`: the seed's §5.2 code (contenders.keras_fit): Sequential 784-128-10, SGD(0.01,
  momentum 0.9), model.fit(batch_size=64, shuffle=True), seconds per epoch from a callback;
- `trainlab keras`: `trainlab.train` of examples/seed_mlp.yaml with train.backend=keras, seconds
  per epoch from metrics.jsonl (training only, as for the others);
- `trainlab torch`: the same config on the torch backend, for reference.
The first epoch of every run is left out (tf.function tracing, torch's first-step set-up); each
figure is the median over the remaining epochs of all repeats. Writes OUT/keras_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # before anything imports keras
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")   # as trainlab's keras backend sets it: one setting for all

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import contenders as C  # noqa: E402
from run import environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is left out")
    parser.add_argument("--limit", type=int, default=None, help="data.limit (default: the whole set)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.limit = 2, 2, 2000
    import torch
    device = torch.device("cpu")
    data = C.load_data([f"data.limit={args.limit}"] if args.limit else [])
    contenders = {
        "keras_fit (seed §5.2)": C.keras_fit,
        "trainlab keras": lambda d, seed, epochs, dev: C.trainlab_run(d, seed, epochs, dev, ["train.backend=keras"]),
        "trainlab torch": C.trainlab_run,
    }
    names = list(contenders)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            result = contenders[name](data, repeat, args.epochs, device)
            runs[name].append(result)
            print(f"repeat {repeat} {name}: epochs {[round(s, 3) for s in result['epoch_seconds']]} s, "
                  f"test accuracy {result['test_accuracy']:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
    medians = {name: statistics.median(s for r in runs[name] for s in r["epoch_seconds"][1:]) for name in names}
    base = medians[names[0]]
    print(f"\n| contender | median s/epoch (epochs 2..{args.epochs}, {args.repeats} repeats) | vs keras_fit | "
          "test accuracy (median) |\n|---|---|---|---|")
    for name in names:
        accuracy = statistics.median(r["test_accuracy"] for r in runs[name])
        print(f"| {name} | {medians[name]:.3f} | {medians[name] / base:.2f}x | {accuracy:.4f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keras_bench.json").write_text(json.dumps(
        {"environment": environment(sys.argv[1:]) | {"command": "python bench/keras_bench.py " + " ".join(sys.argv[1:])},
         "settings": vars(args) | {"out": str(args.out)},
         "medians_s_per_epoch": medians, "ratio_to_keras_fit": {n: medians[n] / base for n in names},
         "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
