"""MNIST-format sets (mnist, fashion-mnist, kmnist): four gzipped IDX files, read with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from . import ArraySplit, Source
from .locate import locate

FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

BASE_URLS = {
    "mnist": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
}

# SHA-256 of the published .gz files, checked on download. Copies already in a data root are
# checked structurally instead (gzip CRC-32 + IDX header + exact length): Debian's
# dataset-fashion-mnist re-compresses the same IDX bytes, so its .gz digests differ.
SHA256 = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    # From tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt (these exact cvdf URLs);
    # the same digests appear in Connor Olding's mnists.py hash table.
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    # From tensorflow/datasets tensorflow_datasets/url_checksums/kmnist.txt (codh.rois.ac.jp URLs).
    "kmnist": {
        "train-images-idx3-ubyte.gz": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        "train-labels-idx1-ubyte.gz": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        "t10k-images-idx3-ubyte.gz": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        "t10k-labels-idx1-ubyte.gz": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
    },
}

CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}

_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file; any truncation or corruption is a DataError naming the file."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; CRC mismatch too
        raise DataError(f"Data file '{path}' is truncated or corrupt ({e}). "
                        "Delete it and fetch the original again.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"Data file '{path}' is not an IDX file (bad magic number). "
                        "Replace it with the original file.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"Data file '{path}' holds {len(raw)} bytes after decompression, "
                        f"its header promises {expected} ({dims}). It is truncated or corrupt: "
                        "delete it and fetch the original again.")
    return np.frombuffer(raw, dtype=_DTYPES[raw[2]], offset=header).reshape(dims)


def load(name: str, data_dir: Optional[str] = None, download: bool = True) -> Source:
    """Read the four IDX files of `name` into uint8 (N, 1, 28, 28) images and int64 labels."""
    base = BASE_URLS[name]
    folder = locate(name, FILES, data_dir, urls={f: base + f for f in FILES},
                    sha256=SHA256.get(name), download=download)
    arrays = {f: read_idx(folder / f) for f in FILES}

    def split(images: str, labels: str) -> ArraySplit:
        x, y = arrays[images], arrays[labels]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"Files '{folder / images}' and '{folder / labels}' do not match: "
                            f"{x.shape} images, {y.shape} labels.")
        if y.max() >= len(CLASSES[name]):
            raise DataError(f"Labels in '{folder / labels}' go up to {y.max()}; {name} has "
                            f"{len(CLASSES[name])} classes.")
        return ArraySplit(torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))

    return Source(train=split(FILES[0], FILES[1]), test=split(FILES[2], FILES[3]),
                  task="classification", classes=CLASSES[name])
