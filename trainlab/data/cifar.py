"""CIFAR-10 / CIFAR-100 ("python version" pickled batches): checksum first, then a restricted unpickle.

Layouts accepted in the dataset folder ``ROOT/cifar10`` (``ROOT/cifar100`` likewise), tried in order:

1. ``ROOT/cifar10/cifar-10-batches-py/`` holding the extracted files ``data_batch_1`` ..
   ``data_batch_5``, ``test_batch``, ``batches.meta`` (cifar100: ``cifar-100-python/`` with
   ``train``, ``test``, ``meta``), as ``tar xzf cifar-10-python.tar.gz`` leaves them;
2. those same files directly in ``ROOT/cifar10/``;
3. only the official archive ``ROOT/cifar10/cifar-10-python.tar.gz`` (``cifar-100-python.tar.gz``):
   its SHA-256 is checked and the batches are read from it in memory, nothing is written there.

The first root that has the folder is used; a layout with a file missing is an error naming the
file (no fall-back to another layout or root). When no root has the folder, the archive is
downloaded from the official address into the first writable root, its SHA-256 checked, and the
batch files extracted into ``ROOT/cifar10/cifar-10-batches-py/`` under their fixed names (member
paths from the archive are never used as file paths, so no path traversal is possible).

The batches are pickles. Every batch file is checked against its published MD5 (torchvision's
``torchvision/datasets/cifar.py`` table) before anything in it is unpickled, and the unpickler
only resolves the few numpy globals an array needs: a file that passes the checksum but asks for
anything else is refused (defence in depth, not the first line).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from . import ArraySplit, Source
from .locate import data_roots, locate, sha256_of

# Per dataset: archive name, folder inside the archive, train batches, test batch, meta file,
# the label key in a batch and the class-name key in the meta file.
LAYOUT = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "base": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": "test_batch",
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "base": "cifar-100-python",
        "train": ["train"],
        "test": "test",
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
    },
}

URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}

# SHA-256 of the official archives, as pinned by Keras (keras/datasets/cifar10.py and
# cifar100.py, `file_hash=`) and torchvision's prototype datasets (cifar100 `_SHA256`).
ARCHIVE_SHA256 = {
    "cifar10": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "cifar100": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
}

# MD5 of each extracted batch file, from torchvision/datasets/cifar.py (train_list, test_list,
# meta). Module-level so tests can inject the digests of their own small fixtures.
MD5 = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}

# The only globals the batches need: numpy's array and dtype reconstruction. Python-2 era files
# name numpy.core.multiarray, files written by numpy >= 2 name numpy._core.multiarray; both map
# to the function this numpy actually uses, without importing the deprecated numpy.core.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Harmless builtins (plain containers) a pickled dict of lists could refer to.
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED; anything else (os.system, eval, ...) is refused."""

    def __init__(self, data: bytes, source: Path):
        # latin1: the official batches were pickled by Python 2, whose str holds the raw array bytes.
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"Data file '{self.source}' asks to load '{module}.{name}', which a CIFAR batch never "
                "needs: refusing to unpickle it. Replace it with the original file.") from None


def unpickle(data: bytes, source: Path) -> dict:
    """Unpickle a verified batch with the restricted unpickler; keys come back as str."""
    try:
        obj = _RestrictedUnpickler(data, source).load()
    except DataError:
        raise
    except Exception as e:  # a broken stream raises many types (UnpicklingError, EOFError, ValueError...)
        raise DataError(f"Data file '{source}' is not a readable CIFAR batch ({type(e).__name__}: {e}). "
                        "Replace it with the original file.") from None
    if not isinstance(obj, dict):
        raise DataError(f"Data file '{source}' holds a {type(obj).__name__}, not a CIFAR batch dict.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _check_md5(data: bytes, expected: Optional[str], source: Path) -> None:
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if expected is not None and actual != expected:
        raise DataError(
            f"Data file '{source}' is corrupt or not the published file: MD5 {actual}, expected "
            f"{expected}. Nothing in it was unpickled. Delete it and fetch the original again.")


def _find_folder(name: str, data_dir: Optional[str], download: bool) -> Path:
    """ROOT/name from the first root that has it, else the downloaded (and extracted) archive."""
    for root in data_roots(data_dir):
        if (root / name).is_dir():
            return root / name
    lay = LAYOUT[name]
    try:
        folder = locate(name, [lay["archive"]], data_dir, urls={lay["archive"]: URLS[name]},
                        sha256={lay["archive"]: ARCHIVE_SHA256[name]}, download=download)
    except DataError as e:
        files = ", ".join(_members(name))
        raise DataError(f"{e}\n(Or the extracted folder {lay['base']}/ holding {files}.)") from None
    _extract(folder, name)
    return folder


def _members(name: str) -> list[str]:
    lay = LAYOUT[name]
    return lay["train"] + [lay["test"], lay["meta"]]


def _read_from_archive(archive: Path, name: str) -> dict[str, bytes]:
    """Bytes of each batch, read in memory from the archive after its SHA-256 is checked."""
    expected = ARCHIVE_SHA256.get(name)
    actual = sha256_of(archive)
    if expected is not None and actual != expected:
        raise DataError(
            f"Data file '{archive}' is corrupt or not the published archive: SHA-256 {actual}, expected "
            f"{expected}. Delete it (it will be downloaded again) or replace it with the original.")
    base = LAYOUT[name]["base"]
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for f in _members(name):
                try:
                    member = tar.getmember(f"{base}/{f}")
                except KeyError:
                    raise DataError(f"Archive '{archive}' has no member {base}/{f}.") from None
                if not member.isfile():  # a link could point anywhere in the archive
                    raise DataError(f"Archive '{archive}': member {base}/{f} is not a regular file.")
                out[f] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"Data file '{archive}' is truncated or corrupt ({e}). "
                        "Delete it and fetch the original again.") from None
    return out


def _extract(folder: Path, name: str) -> None:
    """Write the batches of the downloaded archive into folder/base, whole or not at all."""
    lay = LAYOUT[name]
    target = folder / lay["base"]
    if target.is_dir():
        return
    data = _read_from_archive(folder / lay["archive"], name)
    staging = Path(tempfile.mkdtemp(prefix=f".{lay['base']}-", dir=folder))
    try:
        for f, raw in data.items():
            (staging / f).write_bytes(raw)  # fixed names from LAYOUT, never the archive's paths
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_batches(folder: Path, name: str) -> tuple[dict[str, bytes], Path]:
    """Raw bytes of every batch file and the folder (or archive) they came from."""
    lay = LAYOUT[name]
    files = _members(name)
    extracted = folder / lay["base"]
    if extracted.is_dir():
        where = extracted
    elif any((folder / f).is_file() for f in files):
        where = folder
    elif (folder / lay["archive"]).is_file():
        return _read_from_archive(folder / lay["archive"], name), folder / lay["archive"]
    else:
        raise DataError(
            f"Dataset folder '{folder}' holds neither {lay['base']}/ ({', '.join(files)}) nor "
            f"{lay['archive']}. Put the original files there or remove the folder so another root is used.")
    missing = [f for f in files if not (where / f).is_file()]
    if missing:
        raise DataError(f"Dataset folder '{where}' is incomplete: missing {', '.join(missing)}. "
                        "Put the original files there or remove the folder so another root is used.")
    return {f: (where / f).read_bytes() for f in files}, where


def load(name: str, data_dir: Optional[str] = None, download: bool = True) -> Source:
    """Read CIFAR-10 or CIFAR-100 into uint8 (N, 3, 32, 32) images and int64 (fine) labels.

    >>> src = load("cifar10")
    >>> src.train.x.shape, src.test.x.shape   # (50000, 3, 32, 32), (10000, 3, 32, 32)
    """
    if name not in LAYOUT:
        raise DataError(f"Unknown CIFAR set '{name}': expected one of {', '.join(LAYOUT)}.")
    lay = LAYOUT[name]
    folder = _find_folder(name, data_dir, download)
    raw, where = _read_batches(folder, name)
    # Every checksum is checked before the first unpickle, so a bad set fails fast and untouched.
    for f, data in raw.items():
        _check_md5(data, MD5.get(name, {}).get(f), where / f)

    meta = unpickle(raw[lay["meta"]], where / lay["meta"])
    names = meta.get(lay["names_key"])
    if not isinstance(names, list) or not names:
        raise DataError(f"Data file '{where / lay['meta']}' has no '{lay['names_key']}' list.")
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]

    def split(files: list[str]) -> ArraySplit:
        xs, ys = [], []
        for f in files:
            batch = unpickle(raw[f], where / f)
            x, y = batch.get("data"), batch.get(lay["label_key"])
            # x: (N, 3072) uint8, each row 1024 red, 1024 green, 1024 blue values, row-major 32x32.
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
                raise DataError(f"Data file '{where / f}': 'data' is not an (N, 3072) uint8 array.")
            y = np.asarray(y if y is not None else [], dtype=np.int64)
            if y.shape != (len(x),):
                raise DataError(f"Data file '{where / f}': {len(x)} images but {y.size} '{lay['label_key']}'.")
            if len(y) and (y.min() < 0 or y.max() >= len(classes)):
                raise DataError(f"Data file '{where / f}': labels go from {y.min()} to {y.max()}; "
                                f"{name} has {len(classes)} classes.")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        # np.concatenate copies, so the tensors own writable memory.
        return ArraySplit(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    return Source(train=split(lay["train"]), test=split([lay["test"]]),
                  task="classification", classes=classes)
