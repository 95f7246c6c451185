"""ImageNet-style class folders: list the image files at load time, decode them one at a time.

Layouts accepted under `path` (class names are folder names, sorted; label = index in that order):

- ``path/train/<class>/*.jpg`` with optionally ``path/test/<class>/...``: the official test split.
  When there is no ``test/`` but a ``val/`` exists, ``val/`` is the test split (ImageNet publishes
  no test labels; its val set is the held-out set everyone reports). When both exist, ``val/`` is
  ignored: trainlab carves its own validation split from ``train/`` (data.val_fraction).
- ``path/<class>/*.jpg``: no official test split; make_splits carves one out (data.test_fraction).

Images may sit in nested folders below a class folder. Hidden files and folders (".name") are
skipped. Files are not opened at load time: a FileSplit holds their paths and labels, and
ImageFileDataset decodes each one when a batch asks for it.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from . import FileSplit, Source

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _is_hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def _class_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"Image folder '{folder}' does not exist or is not a folder.")
    dirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)
    if not dirs:
        raise DataError(
            f"Image folder '{folder}' has no class folders. Expected {folder}/<class>/<image>.jpg "
            f"(or {folder}/train/<class>/...), one folder per class.")
    return dirs


def _images(class_dir: Path) -> list[str]:
    files = sorted(str(p) for p in class_dir.rglob("*")
                   if p.suffix.lower() in EXTENSIONS and p.is_file() and not _is_hidden(p, class_dir))
    if not files:
        raise DataError(f"Class folder '{class_dir}' holds no images ({', '.join(EXTENSIONS)}). "
                        "Remove it or add its images.")
    return files


def _scan(folder: Path, classes: Optional[list[str]] = None) -> tuple[FileSplit, list[str]]:
    """Files and labels of one split; a test split must use the training split's class names."""
    dirs = _class_dirs(folder)
    if classes is None:
        classes = [d.name for d in dirs]
    index = {c: i for i, c in enumerate(classes)}
    files: list[str] = []
    labels: list[int] = []
    for d in dirs:
        if d.name not in index:
            raise DataError(f"Class folder '{d}' has no counterpart in the training folder; "
                            f"training classes are: {', '.join(classes)}.")
        found = _images(d)
        files += found
        labels += [index[d.name]] * len(found)
    return FileSplit(files, torch.tensor(labels, dtype=torch.int64)), classes


def load(path: str, image_size: int = 64) -> Source:
    """List the images under `path` (layouts in the module docstring); nothing is decoded yet.

    >>> src = load("data/flowers", image_size=64)
    >>> src.classes, len(src.train)       # (['daisy', 'rose', ...], 2936)
    """
    if path is None:
        raise DataError("data.name=imagefolder needs data.path: the folder holding the class folders.")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder '{root}' does not exist or is not a folder.")
    if (root / "train").is_dir():
        train, classes = _scan(root / "train")
        held = root / "test" if (root / "test").is_dir() else root / "val"
        test = _scan(held, classes)[0] if held.is_dir() else None
    else:
        train, classes = _scan(root)
        test = None
    return Source(train=train, test=test, task="classification", classes=classes, image_size=image_size)


_PNG = b"\x89PNG\r\n\x1a\n"


def png_damage(data: bytes) -> Optional[str]:
    """What is wrong with a PNG file's chunks (a CRC-32 mismatch, a cut), or None when every chunk is whole.

    PIL does not check the CRCs of the pixel data (IDAT) and stops inflating once it has the pixels:
    1 in 13 single-bit flips there decoded silently to other pixels.
    """
    pos = len(_PNG)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            break
        kind = data[pos + 4:pos + 8]
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"its {kind.decode('latin-1')!r} chunk fails its CRC-32 check"
        if kind == b"IEND":
            return None
        pos = end
    return "it is truncated (no complete IEND chunk)"


def read_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Decode one image file into a uint8 (3, image_size, image_size) tensor (RGB, bilinear resize).

    PNG files are checked chunk by chunk (CRC-32) first; JPEG and the other formats carry no checksum.
    """
    from PIL import Image

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"Image file '{path}' cannot be read ({e.strerror or e}).") from None
    damage = png_damage(data) if data.startswith(_PNG) else None
    if damage is not None:
        raise DataError(f"Image file '{path}' is corrupt: {damage}. Replace or remove it.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)  # (H, W, 3)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), ValueError, ...
        raise DataError(f"Image file '{path}' cannot be decoded ({type(e).__name__}: {e}). "
                        "Replace or remove it.") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


class ImageFileDataset(torch.utils.data.Dataset):
    """Streams (image, label) pairs from files: uint8 (3, S, S) and an int64 scalar."""

    def __init__(self, files: Sequence[str], labels, image_size: int):
        self.files = list(files)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(self.files) != len(self.labels):
            raise ValueError(f"{len(self.files)} files but {len(self.labels)} labels")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return read_image(self.files[i], self.image_size), self.labels[i]
