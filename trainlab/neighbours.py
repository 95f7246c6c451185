"""Each training image's nearest training images (pretrain.positives=neighbours): the search, its cache, its cost.

The search is scikit-learn's; what is written here is the cache that saves repeating it (about a
minute for Fashion-MNIST's 54,000 images on two cores) on every resume, every seed of a
`trainlab compare`, and every `trainlab check --pretrain`.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .data import pixel_scale
from .errors import DiskFull
from .runs import atomic_write_bytes

# Part of every cache key: raise it when the search changes what it returns for the same images.
CACHE_VERSION = 1
# check() times the search on this many images and scales by the square of the count (brute force
# computes every pair's distance).
SAMPLE = 4096


def nearest_neighbours(images: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) images -> (N, k) int64: each one's k nearest others, by Euclidean distance between
    their pixels divided by pixel_scale: uint8 images in [0, 1], digits' 0..16 as stored. The search
    is scikit-learn's brute force, about a minute for 54,000 images of 28x28 on two cores. An image's
    own row, at distance 0, is left out (so is one exact copy of it)."""
    from sklearn.neighbors import NearestNeighbors

    pixels = _pixels(images)
    search = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(pixels)
    found = search.kneighbors(pixels, return_distance=False)     # (N, k + 1), nearest first
    return torch.from_numpy(found[:, 1:]).to(torch.int64)


def find_neighbours(images: torch.Tensor, k: int, search: bool = True) -> Optional[torch.Tensor]:
    """nearest_neighbours(images, k), read from the cache when these very images were searched before,
    else searched (announced on stderr by rank 0) and stored there. A resumed run thus pairs images
    exactly as before its interruption. `search=False` (check's dry run): None instead of a search."""
    file = cache_file(images, k)
    table = _read(file, len(images), k)
    if table is not None or not search:
        return table
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrain: finding the {k} nearest neighbours of each of {len(images)} training images (kept "
              f"in {file.parent} for the next run) ...", file=sys.stderr, flush=True)
    table = nearest_neighbours(images, k)
    buffer = io.BytesIO()
    np.save(buffer, table.numpy(), allow_pickle=False)
    try:
        atomic_write_bytes(file, buffer.getvalue())
    except (OSError, DiskFull):  # an unwritable or full cache costs the next run the search, nothing else
        pass
    return table


def cached_neighbours(images: torch.Tensor, k: int) -> Optional[torch.Tensor]:
    """The cached (N, k) table for these images, or None when there is none or it is damaged."""
    return _read(cache_file(images, k), len(images), k)


def _read(file: Path, n: int, k: int) -> Optional[torch.Tensor]:
    """The (n, k) table in `file`, or None when there is none or it is damaged (a file that is not a
    plain int64 .npy of that shape, or holds an index outside 0 .. n-1: searched again)."""
    try:
        table = np.load(file, allow_pickle=False)  # never unpickles
    except (OSError, ValueError, EOFError):
        return None
    if table.dtype != np.int64 or table.shape != (n, k) or (n and (table.min() < 0 or table.max() >= n)):
        return None
    return torch.from_numpy(table)


def cache_dir() -> Path:
    """$TRAINLAB_CACHE/neighbours, else ~/.cache/trainlab/neighbours (beside downloaded data)."""
    return Path(os.environ.get("TRAINLAB_CACHE") or "~/.cache/trainlab").expanduser() / "neighbours"


def cache_file(images: torch.Tensor, k: int) -> Path:
    """The table's file, named by the SHA-256 of the images' bytes, shape, dtype, k and CACHE_VERSION: a
    different split, subset or dataset is a different file."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {tuple(images.shape)} {images.dtype} k={k}\n".encode())
    digest.update(memoryview(images.detach().cpu().contiguous().numpy()).cast("B"))
    return cache_dir() / f"{digest.hexdigest()[:32]}-k{k}.npy"


def search_seconds(images: torch.Tensor, k: int) -> tuple[float, bool]:
    """(seconds, cached): 0 when the cache holds the table; else the search timed on the first SAMPLE
    images and scaled by (N / SAMPLE)², what brute force's N² distances cost: for Fashion-MNIST's
    54,000 images on two cores, 65 s against the 55 s the search takes (larger matrix products run a
    little faster per pair)."""
    if cached_neighbours(images, k) is not None:
        return 0.0, True
    sample = images[:SAMPLE]
    k = min(k, len(sample) - 1)  # what a split of fewer than k + 1 images allows
    nearest_neighbours(sample[:256], min(k, 255))  # imports and thread pools start: not timed
    start = time.perf_counter()
    nearest_neighbours(sample, k)
    return (time.perf_counter() - start) * (len(images) / len(sample)) ** 2, False


def _pixels(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 or float images -> (N, C*H*W) float32 pixels divided by pixel_scale."""
    unit = 1 / pixel_scale(images.dtype)
    return (images.flatten(1).to(torch.float32) * unit).numpy()
