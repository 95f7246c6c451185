"""The contenders: each trains one model one way and returns its epoch times and test accuracy.

Every contender has the signature `fn(data, seed, epochs, device) -> dict` with at least
`epoch_seconds` (list, one per epoch: wall time of the epoch's training alone, no evaluation)
and `test_accuracy`. They share one `BenchData`, so all of them see the same training examples
(trainlab's train split) and the same test examples.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SEED_CONFIG = ROOT / "examples" / "seed_mlp.yaml"

# The seed's hyper-parameters (its section 5.1), shared by every MLP contender.
LR, MOMENTUM, BATCH = 0.01, 0.9, 64


@dataclass
class BenchData:
    """One split of a dataset as every contender sees it (trainlab alone needs only the overrides).

    x_train, x_test: (N, C, H, W) uint8 images as the dataset ships them; y: (N,) int64.
    mean, std: per-channel statistics of the training split in [0, 1] units (what trainlab uses).
    overrides: the dotted config overrides that give trainlab the same split.
    """

    overrides: list[str]
    config_path: Optional[Path] = SEED_CONFIG
    x_train: Optional[np.ndarray] = None
    y_train: Optional[np.ndarray] = None
    x_test: Optional[np.ndarray] = None
    y_test: Optional[np.ndarray] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def normalised(self, split: str) -> torch.Tensor:
        """(N, C, H, W) float32, (x / 255 - mean) / std: what Normalize produces, for a whole split."""
        x = torch.from_numpy(self.x_train if split == "train" else self.x_test).float().div_(255)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)


def load_data(overrides: list[str], config_path: Optional[Path] = SEED_CONFIG,
              data_dir: Optional[str] = None) -> BenchData:
    """The split trainlab would train on for this config: the same examples for every contender."""
    from trainlab import data, load_config

    cfg = load_config(config_path, overrides)
    splits = data.load(cfg, data_dir)
    n_test = len(splits.test) if cfg.eval.limit is None else min(cfg.eval.limit, len(splits.test))
    return BenchData(overrides=list(overrides), config_path=config_path,
                     x_train=splits.train.x.numpy(), y_train=splits.train.y.numpy(),
                     x_test=splits.test.x[:n_test].numpy(), y_test=splits.test.y[:n_test].numpy(),
                     mean=list(splits.mean), std=list(splits.std))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_mlp(hidden: int = 128, n_in: int = 784, n_out: int = 10) -> nn.Module:
    """The seed's Net (784-128-10, ReLU) as an nn.Sequential; same init order as trainlab's mlp."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


# ---------------------------------------------------------------- PyTorch DataLoader loops

class PerSampleDataset(torch.utils.data.Dataset):
    """What torchvision's FashionMNIST + ToTensor() + Normalize(mean, std) do, one example at a time.

    torchvision also builds a PIL image per example before ToTensor; this skips that, so the
    reference is if anything faster than the seed's code run with torchvision.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float]):
        self.images, self.labels = images, labels          # (N, C, H, W) uint8, (N,) int64
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i]).float().div(255)   # ToTensor: (C, H, W) in [0, 1]
        x = x.sub(self.mean).div(self.std)                      # Normalize
        return x, int(self.labels[i])


def seed_loop(net: nn.Module, loader, epochs: int, device: torch.device, lr: float = LR,
              momentum: float = MOMENTUM, nesterov: bool = False) -> list[float]:
    """The seed's training loop, verbatim but for the timer and .to(device): seconds per epoch."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
    seconds = []
    net.train()
    for epoch in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        running_loss = 0.0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()          # the seed prints the epoch's mean loss
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: np.ndarray, device: torch.device) -> float:
    """Test accuracy in eval mode, batches of 1024 (not timed)."""
    net.eval()
    hits = 0
    for i in range(0, len(x), 1024):
        hits += int((net(x[i:i + 1024].to(device)).argmax(1).cpu() == torch.from_numpy(y[i:i + 1024])).sum())
    net.train()
    return hits / len(y)


def _loader(dataset, seed: int, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def reference(data: BenchData, seed: int, epochs: int, device: torch.device, batch_size: int = BATCH) -> dict:
    """Case 1: the seed's code made runnable: per-example conversion in a Dataset, DataLoader batch 64."""
    torch.manual_seed(seed)
    net = seed_mlp().to(device)
    dataset = PerSampleDataset(data.x_train, data.y_train, data.mean, data.std)
    seconds = seed_loop(net, _loader(dataset, seed, batch_size), epochs, device)
    return {"epoch_seconds": seconds, "test_accuracy": accuracy(net, data.normalised("test"), data.y_test, device)}


def tensordataset(data: BenchData, seed: int, epochs: int, device: torch.device, batch_size: int = BATCH,
                  make_model: Callable[[], nn.Module] = seed_mlp, lr: float = LR, momentum: float = MOMENTUM) -> dict:
    """Case 2: normalised once into one float32 tensor, TensorDataset + DataLoader batch 64.

    Case 8 reuses it with another model (make_model), batch size and learning rate.
    """
    torch.manual_seed(seed)
    net = make_model().to(device)
    dataset = torch.utils.data.TensorDataset(data.normalised("train"), torch.from_numpy(data.y_train))
    seconds = seed_loop(net, _loader(dataset, seed, batch_size), epochs, device, lr=lr, momentum=momentum)
    return {"epoch_seconds": seconds, "test_accuracy": accuracy(net, data.normalised("test"), data.y_test, device)}


# ---------------------------------------------------------------- scikit-learn, Keras

def sklearn_mlp(data: BenchData, seed: int, epochs: int, device: torch.device, batch_size: int = BATCH) -> dict:
    """Case 3: MLPClassifier, the same architecture and optimiser; one partial_fit per epoch (CPU only)."""
    import warnings

    from sklearn.neural_network import MLPClassifier

    x = data.normalised("train").reshape(data.n_train, -1).numpy()   # (N, 784) float32
    x_test = data.normalised("test").reshape(len(data.y_test), -1).numpy()
    clf = MLPClassifier(hidden_layer_sizes=(128,), activation="relu", solver="sgd",
                        learning_rate="constant", learning_rate_init=LR, momentum=MOMENTUM,
                        nesterovs_momentum=False, batch_size=batch_size, alpha=0.0, shuffle=True,
                        random_state=seed)
    classes = np.arange(int(max(data.y_train.max(), data.y_test.max())) + 1)
    seconds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            t0 = time.perf_counter()
            clf.partial_fit(x, data.y_train, classes=classes)          # one pass, shuffled
            seconds.append(time.perf_counter() - t0)
    return {"epoch_seconds": seconds, "test_accuracy": float(clf.score(x_test, data.y_test)),
            "x_dtype": str(x.dtype)}


def keras_available() -> tuple[bool, str]:
    """(importable, why not / which backend). Importing keras can fail in many ways: all are 'no'."""
    try:
        import keras
        return True, f"keras {keras.__version__}, backend {keras.backend.backend()}"
    except Exception as e:  # ImportError, or a backend that fails to initialise
        return False, f"{type(e).__name__}: {e}"


def keras_fit(data: BenchData, seed: int, epochs: int, device: torch.device, batch_size: int = BATCH) -> dict:
    """Case 4: the seed's Keras code (its section 5.2) on the same examples: model.fit, batch 64."""
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    x = data.normalised("train").reshape(data.n_train, -1).numpy()
    x_test = data.normalised("test").reshape(len(data.y_test), -1).numpy()
    model = keras.Sequential([keras.Input(shape=(x.shape[1],)),
                              keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(n_classes, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t0)

    seconds: list[float] = []
    y = keras.utils.to_categorical(data.y_train, n_classes)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0, callbacks=[EpochTimer()])
    pred = model.predict(x_test, batch_size=1024, verbose=0).argmax(1)
    return {"epoch_seconds": seconds, "test_accuracy": float((pred == data.y_test).mean()),
            "backend": keras.backend.backend()}


# ---------------------------------------------------------------- trainlab

def trainlab_run(data: BenchData, seed: int, epochs: int, device: torch.device,
                 extra: Optional[list[str]] = None) -> dict:
    """`trainlab.train(load_config(config, overrides), out=tmp)`: epoch seconds from its history rows.

    train.final=last: the test accuracy is the model's after exactly `epochs` epochs, as for the
    other contenders (the seed config's default would evaluate the best epoch by val.loss).
    """
    import trainlab

    overrides = data.overrides + [f"train.epochs={epochs}", f"train.seed={seed}", f"train.device={device.type}",
                                  "train.progress=none", "train.final=last"] + list(extra or [])
    cfg = trainlab.load_config(data.config_path, overrides)
    with tempfile.TemporaryDirectory(prefix="trainlab-bench-") as tmp:
        result = trainlab.train(cfg, out=Path(tmp) / "run")
    return {"epoch_seconds": [row["seconds"] for row in result.history],
            "test_accuracy": result.metrics["test"].get("accuracy"),
            "torch_threads": result.summary.get("torch_threads")}


# ---------------------------------------------------------------- peak memory (case 6)

CONTENDERS = {
    "reference": reference,
    "tensordataset": tensordataset,
    "sklearn": sklearn_mlp,
    "keras": keras_fit,
    "trainlab": trainlab_run,
}


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB.

    Linux: VmHWM from /proc/self/status, not ru_maxrss: a child's ru_maxrss starts at its parent's
    peak (the kernel carries the old address space's high-water mark across fork + exec), so a
    worker started by a 500 MB bench process would report at least 500 MB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024           # kB
    except OSError:
        pass
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024   # bytes on macOS, KiB on Linux


def memory_worker(name: str, overrides: list[str], epochs: int, device: str) -> dict:
    """Train one contender in this (fresh) process; report its peak resident set size in MiB.

    peak_rss_mib: the peak of the whole process. train_peak_rss_mib: the peak from the end of the
    set-up (imports; the data for every contender but trainlab, whose train() loads it itself) to
    the end, where the kernel lets the mark be reset (None elsewhere). 'baseline' imports torch and
    trainlab, loads the data and trains nothing: the floor every contender starts from.
    """
    import trainlab  # noqa: F401  (every row pays the same imports)

    dev = torch.device(device)
    # trainlab loads the data itself: loading it here as well would count it twice.
    data = BenchData(overrides) if name == "trainlab" else load_data(overrides)
    setup_peak = _peak_rss_mib()
    reset = _reset_peak_rss()
    out: dict = {"contender": name, "epochs": epochs, "setup_peak_rss_mib": setup_peak}
    if name != "baseline":
        out.update(CONTENDERS[name](data, 0, epochs, dev))
    after = _peak_rss_mib()
    out["peak_rss_mib"] = max(setup_peak, after) if reset else after
    out["train_peak_rss_mib"] = after if reset else None
    if dev.type == "cuda":
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / (1 << 20)
    import resource
    out["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # see _peak_rss_mib
    out["pid"] = os.getpid()
    return out
