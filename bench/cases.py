"""The benchmark cases: each interleaves its contenders in one run and returns a JSON-ready dict.

A case's dict holds `case`, `name`, `title`, `settings`, `contenders` (per contender: every
run's raw result plus medians) and `tables` (title, columns, rows: what run.py prints as
markdown). Interleaving: in each repeat every contender runs once, in order A B C on even
repeats and C B A on odd ones, so slow drift of the machine (thermal, other load) hits every
contender alike; the medians pool all epochs of all repeats.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

import contenders as C

RUN_SCRIPT = Path(__file__).resolve().parent / "run.py"


@dataclass
class Settings:
    """What every case reads from the command line (run.py fills it in)."""

    quick: bool
    repeats: int
    epochs: int            # cases 1-4, 8: epochs per run; test accuracy is compared after these
    timing_epochs: int     # cases 5, 7: epochs per run where only the speed matters
    memory_epochs: int     # case 6: epochs per fresh process (the peak comes in the first epoch)
    limit: Optional[int]   # data.limit for all but case 7's sample sweep (None: the whole set)
    eval_limit: Optional[int]  # eval.limit: test examples for the accuracy column (None: all 10000)
    device: torch.device
    sizes: list[int]       # case 7: training examples
    widths: list[int]      # case 7: hidden widths
    matmul_n: int          # case 5: side of the square float32 matrices of the peak measurement
    log: Callable[[str], None] = print
    _data: dict = field(default_factory=dict, repr=False)

    def overrides(self) -> list[str]:
        """Config overrides shared by every contender of cases 1-6: the same examples for all."""
        out = []
        if self.limit is not None:
            out.append(f"data.limit={self.limit}")
        if self.eval_limit is not None:
            out.append(f"eval.limit={self.eval_limit}")
        return out

    def data(self, overrides: list[str], config_path: Optional[Path] = C.SEED_CONFIG) -> C.BenchData:
        """Loaded once per distinct config and reused by every case in this process."""
        key = (tuple(overrides), str(config_path))
        if key not in self._data:
            self._data[key] = C.load_data(overrides, config_path)
        return self._data[key]

    def as_dict(self) -> dict:
        return {"quick": self.quick, "repeats": self.repeats, "epochs": self.epochs,
                "timing_epochs": self.timing_epochs, "memory_epochs": self.memory_epochs,
                "data_limit": self.limit, "eval_limit": self.eval_limit, "device": str(self.device)}


# ---------------------------------------------------------------- shared machinery

def interleave(s: Settings, case: int, runs: dict[str, Callable[[int], dict]],
               repeats: Optional[int] = None) -> dict[str, list[dict]]:
    """Run every contender once per repeat (seed = repeat index), alternating the order each repeat."""
    names = list(runs)
    repeats = s.repeats if repeats is None else repeats
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            result = runs[name](r)
            result["wall_seconds"] = time.perf_counter() - t0
            out[name].append(result)
            secs = result.get("epoch_seconds")
            what = f"{statistics.median(secs):.3f} s/epoch" if secs else f"{result['wall_seconds']:.1f} s"
            s.log(f"[case {case}] repeat {r + 1}/{repeats} {name}: {what}")
    return out


def summarise(results: list[dict]) -> dict:
    """Medians over all epochs of all repeats (and over repeats for the accuracy)."""
    epochs = [t for r in results for t in r.get("epoch_seconds", [])]
    out: dict = {"runs": results}
    if epochs:
        out.update(median_epoch_seconds=statistics.median(epochs), min_epoch_seconds=min(epochs),
                   max_epoch_seconds=max(epochs),
                   repeat_medians=[statistics.median(r["epoch_seconds"]) for r in results])
    accs = [r["test_accuracy"] for r in results if r.get("test_accuracy") is not None]
    if accs:
        out["median_test_accuracy"] = statistics.median(accs)
    return out


def fmt(x: Optional[float], digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:,.0f}"


def _seconds_cell(c: dict) -> str:
    return f"{fmt(c['median_epoch_seconds'])} ({fmt(c['min_epoch_seconds'])}–{fmt(c['max_epoch_seconds'])})"


def case_result(case: int, name: str, title: str, s: Settings, contenders: dict, tables: list[dict],
                notes: list[str], **extra) -> dict:
    return {"case": case, "name": name, "title": title, "settings": s.as_dict(), "contenders": contenders,
            "tables": tables, "notes": notes, **extra}


def versus_trainlab(s: Settings, case: int, name: str, title: str, data: C.BenchData,
                    other: str, label: str, fn: Callable, notes: list[str]) -> dict:
    """Cases 1-4: one contender against trainlab on the same examples, the same epochs."""
    runs = interleave(s, case, {
        other: lambda r: fn(data, r, s.epochs, s.device),
        "trainlab": lambda r: C.trainlab_run(data, r, s.epochs, s.device),
    })
    summary = {k: summarise(v) for k, v in runs.items()}
    ours, theirs = summary["trainlab"], summary[other]
    speedup = theirs["median_epoch_seconds"] / ours["median_epoch_seconds"]
    acc_gap = None
    if "median_test_accuracy" in ours and "median_test_accuracy" in theirs:
        acc_gap = 100 * (ours["median_test_accuracy"] - theirs["median_test_accuracy"])
    rows = []
    for key, text in ((other, label), ("trainlab", "trainlab train (examples/seed_mlp.yaml)")):
        c = summary[key]
        rows.append([text, _seconds_cell(c), fmt(c["median_epoch_seconds"] / ours["median_epoch_seconds"], 2),
                     fmt(c.get("median_test_accuracy"), 4)])
    table = {"title": title,
             "columns": ["contender", "s/epoch median (min–max)", "× trainlab's time", "test accuracy"],
             "rows": rows}
    notes = [f"{data.n_train:,} training examples, {len(data.y_test):,} test examples, "
             f"{s.epochs} epoch(s) × {s.repeats} repeat(s). Speed-up of trainlab (their s/epoch ÷ trainlab's): "
             f"{speedup:.2f}×" + (f"; trainlab's test accuracy minus theirs: {acc_gap:+.2f} points"
                                  if acc_gap is not None else "") + "."] + notes
    return case_result(case, name, title, s, summary, [table], notes,
                       speedup=speedup, accuracy_gap_points=acc_gap)


SAME_EXAMPLES = ("Every contender trains on trainlab's training split (the first data.val_fraction=0.1 "
                 "of the 60,000 held out for validation, as in examples/seed_mlp.yaml), so all see "
                 "the same examples; the seed's own code would use all 60,000.")
TIMING = ("s/epoch is the wall time of one epoch's training alone (trainlab: metrics.jsonl 'seconds'; "
          "validation and checkpoints are outside it); trainlab runs with train.final=last so its test "
          "accuracy is after the same epochs as the others'.")


# ---------------------------------------------------------------- cases 1-4

def case1(s: Settings) -> dict:
    data = s.data(s.overrides())
    return versus_trainlab(
        s, 1, "seed_loop", "1. The seed's PyTorch loop (per-example Dataset + DataLoader) vs trainlab",
        data, "reference", "seed loop: per-example ToTensor/Normalize Dataset, DataLoader(64, shuffle)",
        C.reference,
        [SAME_EXAMPLES, TIMING,
         f"Normalisation uses the training split's mean {data.mean[0]:.4f} and std {data.std[0]:.4f} "
         "(what trainlab uses; the usual constants are 0.2860 and 0.3530). The loop is the seed's, "
         "`running_loss += loss.item()` included; num_workers=0 (the seed sets none)."])


def case2(s: Settings) -> dict:
    data = s.data(s.overrides())
    return versus_trainlab(
        s, 2, "tensordataset", "2. A pre-built TensorDataset + DataLoader vs trainlab",
        data, "tensordataset", "TensorDataset (normalised float32) + DataLoader(64, shuffle)", C.tensordataset,
        [SAME_EXAMPLES, TIMING, "The loop body is the seed's (case 1); only the data path differs."])


def case3(s: Settings) -> dict:
    data = s.data(s.overrides())
    return versus_trainlab(
        s, 3, "sklearn", "3. scikit-learn MLPClassifier vs trainlab",
        data, "sklearn", "MLPClassifier((128,), sgd, lr 0.01, momentum 0.9, batch 64, alpha 0)", C.sklearn_mlp,
        [SAME_EXAMPLES, TIMING,
         "MLPClassifier(hidden_layer_sizes=(128,), solver='sgd', learning_rate_init=0.01, momentum=0.9, "
         "nesterovs_momentum=False, batch_size=64, alpha=0), one partial_fit (one shuffled pass) per "
         "epoch, float32 inputs; it runs on the CPU whatever --device says. Its initialisation "
         "(Glorot) differs from torch's."])


def case4(s: Settings) -> dict:
    ok, why = C.keras_available()
    if not ok:
        return skipped(s, 4, "keras", "4. Keras 3 model.fit vs trainlab", f"keras is not importable ({why})")
    data = s.data(s.overrides())
    return versus_trainlab(
        s, 4, "keras", "4. Keras 3 model.fit vs trainlab",
        data, "keras", f"Keras model.fit(batch_size=64) ({why})", C.keras_fit,
        [SAME_EXAMPLES, TIMING,
         "The seed's Keras code (section 5.2): Dense(128, relu), Dense(10, softmax), categorical "
         "cross-entropy on one-hot labels, SGD(0.01, momentum 0.9); epoch time from a callback. "
         "The backend is whatever KERAS_BACKEND selects."])


def skipped(s: Settings, case: int, name: str, title: str, why: str) -> dict:
    s.log(f"[case {case}] skipped: {why}")
    return case_result(case, name, title, s, {}, [], [f"Skipped: {why}."], skipped=why)


# ---------------------------------------------------------------- case 5: FLOP/s

def matmul_peak(n: int, device: torch.device, reps: int = 5, dtype: torch.dtype = torch.float32,
                chain: int = 3) -> dict:
    """Best GFLOP/s of n×n @ n×n torch.matmuls (2·n³ FLOPs each) at the current threads and precision.

    Each of `reps` samples times `chain` products back to back (about 0.1 s at n=2048 on 2 CPU
    threads): sustained like an epoch's arithmetic, not one lucky burst.
    """
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = math.inf
    for _ in range(reps):
        C.sync(device)
        t0 = time.perf_counter()
        for _ in range(chain):
            a @ b
        C.sync(device)
        best = min(best, (time.perf_counter() - t0) / chain)
    return {"n": n, "chain": chain, "best_seconds": best, "gflops": 2 * n ** 3 / best / 1e9, "epoch_seconds": []}


def weight_params(widths: list[int]) -> int:
    """Entries of the weight matrices of an MLP with these layer widths (biases excluded)."""
    return sum(a * b for a, b in zip(widths, widths[1:]))


def mlp_flops(n: int, widths: list[int]) -> tuple[float, float]:
    """(model, executed) FLOPs of one training epoch of n examples.

    model: 6·n·P, the usual count (forward 2 per multiply-add, backward 4: the weight and the input
    gradient). executed: autograd computes no gradient for the input of the first layer, so the
    matrix products it runs are 6·n·P − 2·n·widths[0]·widths[1]. Biases, ReLU, softmax and the
    optimiser are left out (O(n·width), not O(n·P)).
    """
    p = weight_params(widths)
    return 6.0 * n * p, 6.0 * n * p - 2.0 * n * widths[0] * widths[1]


def case5(s: Settings) -> dict:
    data = s.data(s.overrides())
    batches = [64, 512, 4096]
    n_in = int(np.prod(data.x_train.shape[1:]))
    widths = [n_in, 128, int(data.y_train.max()) + 1]
    flops, executed = mlp_flops(data.n_train, widths)
    runs: dict[str, Callable[[int], dict]] = {"matmul": lambda r: matmul_peak(s.matmul_n, s.device)}
    if s.device.type == "cuda":   # trainlab may train in bf16 there: its peak is the other yardstick
        runs["matmul bf16"] = lambda r: matmul_peak(s.matmul_n, s.device, dtype=torch.bfloat16)
    for b in batches:
        runs[f"batch {b}"] = (lambda r, b=b: C.trainlab_run(data, r, s.timing_epochs, s.device,
                                                            [f"train.batch_size={b}"]))
    results = interleave(s, 5, runs)
    # The machine's speed drifts (a shared 2-core VM: the peak measured 233-293 GFLOP/s on one day),
    # so each repeat's epochs are set against the peak measured in that same repeat, next to them,
    # and the table quotes the median of those per-repeat shares. The best peak of all is shown too.
    peaks = [r["gflops"] for r in results["matmul"]]
    peak = statistics.median(peaks)
    summary = {"matmul": {"runs": results["matmul"], "peak_gflops": peak, "best_peak_gflops": max(peaks)}}
    bf16_note = []
    if "matmul bf16" in results:
        bf16 = max(r["gflops"] for r in results["matmul bf16"])
        summary["matmul bf16"] = {"runs": results["matmul bf16"], "peak_gflops": bf16}
        bf16_note = [f"bf16 matmul peak, same shape: {bf16:,.1f} GFLOP/s (the yardstick if trainlab trains "
                     "under bf16 autocast; '% of peak' above is against float32, TF32 as torch's "
                     f"float32_matmul_precision={torch.get_float32_matmul_precision()!r} allows)."]
    rows = []
    for b in batches:
        c = summary[f"batch {b}"] = summarise(results[f"batch {b}"])
        sec = c["median_epoch_seconds"]
        shares = [flops / repeat_sec / 1e9 / repeat_peak
                  for repeat_sec, repeat_peak in zip(c["repeat_medians"], peaks)]
        share = statistics.median(shares)
        c.update(gflops=flops / sec / 1e9, executed_gflops=executed / sec / 1e9,
                 repeat_shares_of_peak=shares, percent_of_peak=100 * share,
                 executed_percent_of_peak=100 * share * executed / flops,
                 percent_of_best_peak=100 * flops / sec / 1e9 / max(peaks))
        rows.append([str(b), fmt(sec), str(-(-data.n_train // b)), fmt(c["gflops"], 1),
                     fmt(c["percent_of_peak"], 1), fmt(c["executed_gflops"], 1),
                     fmt(c["executed_percent_of_peak"], 1)])
    title = "5. Achieved GFLOP/s of a trainlab epoch vs the measured matmul peak"
    table = {"title": title,
             "columns": ["batch", "s/epoch", "steps", "GFLOP/s (6·N·P)", "% of peak", "GFLOP/s executed",
                         "% of peak (executed)"],
             "rows": rows}
    at_best = summary[f"batch {batches[-1]}"]["percent_of_best_peak"]
    notes = [f"Peak: in each repeat, the best of 5 samples of 3 back-to-back float32 torch.matmul "
             f"{s.matmul_n}×{s.matmul_n} @ {s.matmul_n}×{s.matmul_n} on {s.device} at {torch.get_num_threads()} "
             f"threads (2·n³ FLOPs each): median {peak:,.1f} GFLOP/s, per repeat "
             + ", ".join(f"{p:,.1f}" for p in peaks) + ". '% of peak' is the median over repeats of that "
             "repeat's epoch GFLOP/s over that repeat's peak (the machine's speed drifts between repeats); "
             f"against the best peak of all ({max(peaks):,.1f}) batch {batches[-1]} is at {at_best:.1f}%.",
             f"One epoch = 6·N·P = 6 × {data.n_train:,} × {weight_params(widths):,} = {flops / 1e9:.1f} GFLOP "
             f"(N training examples, P = {'·'.join(map(str, widths[:2]))} + {'·'.join(map(str, widths[1:]))} "
             "weight entries; forward 2 FLOPs per multiply-add, backward 4). 'Executed' drops the first "
             f"layer's input gradient, which autograd never computes: {executed / 1e9:.1f} GFLOP.",
             f"The seed config at each batch size (train.batch_size override, lr unchanged); "
             f"{s.timing_epochs} epoch(s) × {s.repeats} repeat(s), median."] + bf16_note
    return case_result(5, "flops", title, s, summary, [table], notes, peak_gflops=peak,
                       epoch_gflop=flops / 1e9, epoch_gflop_executed=executed / 1e9)


# ---------------------------------------------------------------- case 6: peak memory

def memory_run(s: Settings, name: str, overrides: list[str]) -> dict:
    """One contender in a fresh `python bench/run.py --worker NAME` process; its JSON last line."""
    cmd = [sys.executable, str(RUN_SCRIPT), "--worker", name, "--worker-overrides", json.dumps(overrides),
           "--epochs", str(s.memory_epochs), "--device", str(s.device)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker '{name}' failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case6(s: Settings) -> dict:
    overrides = s.overrides()
    names = ["baseline", "reference", "tensordataset", "sklearn"]
    keras_ok, keras_why = C.keras_available()
    if keras_ok:
        names.append("keras")
    names.append("trainlab")
    # One fresh process per contender: a peak of memory does not drift the way a time does.
    results = interleave(s, 6, {n: (lambda r, n=n: memory_run(s, n, overrides)) for n in names}, repeats=1)
    summary = {}
    base = statistics.median(r["peak_rss_mib"] for r in results["baseline"])
    labels = {"baseline": "baseline: import torch + trainlab, load the data, train nothing",
              "reference": "seed loop (case 1)", "tensordataset": "TensorDataset + DataLoader (case 2)",
              "sklearn": "scikit-learn MLPClassifier (case 3)", "keras": "Keras model.fit (case 4)",
              "trainlab": "trainlab.train (loads the data itself)"}
    cuda = s.device.type == "cuda"
    rows = []
    for n in names:
        rss = statistics.median(r["peak_rss_mib"] for r in results[n])
        phase = [r["train_peak_rss_mib"] for r in results[n] if r.get("train_peak_rss_mib") is not None]
        train_rss = statistics.median(phase) if phase else None
        summary[n] = {"runs": results[n], "peak_rss_mib": rss, "above_baseline_mib": rss - base,
                      "train_peak_rss_mib": train_rss}
        row = [labels[n], fmt(rss, 0), fmt(rss - base, 0) if n != "baseline" else "–", fmt(train_rss, 0)]
        if cuda:
            gpu = statistics.median(r.get("cuda_peak_allocated_mib", 0.0) for r in results[n])
            summary[n]["cuda_peak_allocated_mib"] = gpu
            row.append(fmt(gpu, 0))
        rows.append(row)
    title = "6. Peak resident memory, each contender in a fresh process"
    columns = (["contender", "peak RSS (MiB)", "above baseline (MiB)", "peak after set-up (MiB)"]
               + (["CUDA peak allocated (MiB)"] if cuda else []))
    notes = [f"Peak RSS: VmHWM of a fresh `python bench/run.py --worker NAME` process after "
             f"{s.memory_epochs} epoch(s) on the same examples as cases 1-3 (trainlab's final evaluation "
             f"included); one process per contender. MiB = 2^20 bytes. (VmHWM, not ru_maxrss: a child's ru_maxrss "
             "starts at its parent's peak on Linux, so it would report the bench process's size.)",
             "Peak after set-up: the peak mark is reset (/proc/self/clear_refs) once imports and data loading "
             "are done, so this is the peak while training; trainlab's row includes its own data loading, "
             "which train() does. The whole-process peak can be set by data loading, not training."]
    if not keras_ok:
        notes.append(f"Keras row left out: keras is not importable ({keras_why}).")
    return case_result(6, "memory", title, s, summary, [{"title": title, "columns": columns, "rows": rows}], notes)


# ---------------------------------------------------------------- case 7: scaling

def case7(s: Settings) -> dict:
    eval_cap = ["eval.limit=1000"]  # the final evaluation is not timed; keep it short
    sample_runs = {}
    for n in s.sizes:
        spec = C.BenchData(["data.val_fraction=0", "train.monitor=train.loss", f"data.limit={n}"] + eval_cap)
        sample_runs[f"{n} examples"] = lambda r, spec=spec: C.trainlab_run(spec, r, s.timing_epochs, s.device)
    samples = {k: summarise(v) for k, v in interleave(s, 7, sample_runs).items()}

    base = [o for o in s.overrides() if not o.startswith("eval.limit")] + eval_cap
    n_train = s.data(s.overrides()).n_train
    width_runs = {}
    for w in s.widths:
        spec = C.BenchData(base + [f"model.hidden=[{w}]"])
        width_runs[f"hidden {w}"] = lambda r, spec=spec: C.trainlab_run(spec, r, s.timing_epochs, s.device)
    widths = {k: summarise(v) for k, v in interleave(s, 7, width_runs).items()}

    rows, prev = [], None
    for n in s.sizes:
        c = samples[f"{n} examples"]
        sec = c["median_epoch_seconds"]
        c["us_per_example"] = 1e6 * sec / n
        c["growth_exponent"] = math.log(sec / prev[1]) / math.log(n / prev[0]) if prev else None
        rows.append([f"{n:,}", fmt(sec), fmt(c["us_per_example"], 2), fmt(c["growth_exponent"], 2)])
        prev = (n, sec)
    t_samples = {"title": "7a. Seconds per epoch as the training set grows (seed MLP, batch 64)",
                 "columns": ["training examples", "s/epoch", "µs per example", "growth exponent vs previous row"],
                 "rows": rows}
    rows = []
    first = None
    for w in s.widths:
        c = widths[f"hidden {w}"]
        sec = c["median_epoch_seconds"]
        flops, _ = mlp_flops(n_train, [784, w, 10])
        c.update(us_per_example=1e6 * sec / n_train, gflops=flops / sec / 1e9)
        first = first or (w, sec)
        rows.append([str(w), fmt(sec), fmt(c["us_per_example"], 2), fmt(c["gflops"], 1),
                     fmt(sec / first[1], 2), fmt(w / first[0], 1)])
    t_widths = {"title": f"7b. Seconds per epoch as the hidden layer widens ({n_train:,} examples, batch 64)",
                "columns": ["hidden width", "s/epoch", "µs per example", "GFLOP/s (6·N·P)", "time × of first",
                            "FLOPs × of first"],
                "rows": rows}
    notes = [f"trainlab on the seed config, {s.timing_epochs} epoch(s) × {s.repeats} repeat(s), median. 7a uses "
             "data.val_fraction=0 and data.limit=N so that exactly N examples train (train.monitor=train.loss); "
             "a growth exponent ≤ 1 means time grows no worse than linearly in N (above 1 would be worse).",
             "7b: the FLOPs grow with the width (784·w + w·10 weights); time growing more slowly than the "
             "FLOPs means per-step overhead, not arithmetic, dominates at the small widths."]
    return case_result(7, "scaling", "7. Scaling with samples and width", s,
                       {"samples": samples, "widths": widths}, [t_samples, t_widths], notes)


# ---------------------------------------------------------------- case 8: a CNN on 32x32x3 inputs

def write_cifar_like(root: Path, source) -> dict[str, str]:
    """Fashion-MNIST as a CIFAR-10 "python version" folder: padded to 32×32, grey copied to R, G, B.

    Writes root/cifar10/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (the first
    50,000 training images in five batches, the 10,000 test images) and returns their MD5 digests,
    which trainlab checks before unpickling (the published digests are for the real CIFAR-10).
    """
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def rows(x: np.ndarray) -> np.ndarray:   # (N, 1, 28, 28) -> (N, 3072): 1024 R, 1024 G, 1024 B
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        return np.ascontiguousarray(np.repeat(x, 3, axis=1).reshape(len(x), 3072))

    x_train, y_train = source.train.x.numpy(), source.train.y.numpy()
    files = {}
    for i in range(5):
        part = slice(10000 * i, 10000 * (i + 1))
        files[f"data_batch_{i + 1}"] = {"data": rows(x_train[part]), "labels": y_train[part].tolist()}
    files["test_batch"] = {"data": rows(source.test.x.numpy()), "labels": source.test.y.numpy().tolist()}
    files["batches.meta"] = {"label_names": list(source.classes), "num_cases_per_batch": 10000, "num_vis": 3072}
    digests = {}
    for name, obj in files.items():
        raw = pickle.dumps(obj, protocol=4)   # < 5: arrays pickle via _reconstruct, as in CIFAR's files
        (folder / name).write_bytes(raw)
        digests[name] = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return digests


def case8(s: Settings) -> dict:
    from trainlab import load_config
    from trainlab.data import cifar, idx
    from trainlab.models import build_model

    title = "8. A CNN (ResNet-20) on 32×32×3 inputs: TensorDataset + DataLoader vs trainlab"
    with tempfile.TemporaryDirectory(prefix="trainlab-bench-cifar-") as tmp:
        digests = write_cifar_like(Path(tmp), idx.load("fashion-mnist"))
        saved = cifar.MD5.get("cifar10")
        cifar.MD5["cifar10"] = digests   # this process only: trainlab checks these before unpickling
        try:
            overrides = [f"data.dir={tmp}", "data.name=cifar10", "data.val_fraction=0.1", "model.name=resnet",
                         "model.depth=20", "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9",
                         "train.batch_size=256"] + s.overrides()
            data = s.data(overrides, config_path=None)
            cfg = load_config(None, overrides)
            make_model = lambda: build_model(cfg.model, (3, 32, 32), 10)  # noqa: E731
            runs = interleave(s, 8, {
                "tensordataset": lambda r: C.tensordataset(data, r, s.epochs, s.device, batch_size=256,
                                                           make_model=make_model, lr=0.05, momentum=0.9),
                "trainlab": lambda r: C.trainlab_run(data, r, s.epochs, s.device),
            })
        finally:
            cifar.MD5["cifar10"] = saved
            s._data.pop((tuple(overrides), "None"), None)
    summary = {k: summarise(v) for k, v in runs.items()}
    ours = summary["trainlab"]["median_epoch_seconds"]
    rows = []
    for key, text in (("tensordataset", "TensorDataset + DataLoader(256, shuffle), the seed's loop"),
                      ("trainlab", "trainlab train")):
        c = summary[key]
        c["images_per_second"] = data.n_train / c["median_epoch_seconds"]
        rows.append([text, _seconds_cell(c), fmt(c["images_per_second"], 0),
                     fmt(c["median_epoch_seconds"] / ours, 2), fmt(c.get("median_test_accuracy"), 4)])
    table = {"title": title, "columns": ["contender", "s/epoch median (min–max)", "images/s", "× trainlab's time",
                                         "test accuracy"], "rows": rows}
    notes = ["Data: Fashion-MNIST made CIFAR-sized: each 28×28 image zero-padded to 32×32 and copied to three "
             "channels, written as a CIFAR-10 'python version' folder (first 50,000 training images, "
             "10,000 test) and read by trainlab's cifar10 loader; no CIFAR-10 download is needed.",
             f"ResNet-20 (model.name=resnet, depth 20, width 16), SGD lr 0.05 momentum 0.9, batch 256, no "
             f"augmentation, no schedule; {data.n_train:,} training examples, {s.epochs} epoch(s) × {s.repeats} "
             "repeat(s). trainlab runs its defaults for the device (on CUDA whatever its engine enables)."]
    return case_result(8, "cnn32", title, s, summary, [table], notes)


CASES: dict[int, Callable[[Settings], dict]] = {1: case1, 2: case2, 3: case3, 4: case4, 5: case5, 6: case6,
                                                 7: case7, 8: case8}
