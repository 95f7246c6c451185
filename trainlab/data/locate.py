"""Find a dataset's folder in the data roots, or download it with a checksum; verify files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from ..errors import DataError

SYSTEM_ROOTS = ("/usr/share/datasets", "/usr/local/share/datasets")


def data_roots(data_dir: Optional[str] = None) -> list[Path]:
    """Roots in the order DESIGN.md gives: --data-dir, $TRAINLAB_DATA, ~/.cache/trainlab, system."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get("TRAINLAB_DATA"):
        roots.append(Path(os.environ["TRAINLAB_DATA"]).expanduser())
    roots.append(Path("~/.cache/trainlab").expanduser())
    roots += [Path(r) for r in SYSTEM_ROOTS]
    return roots


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: Optional[str]) -> None:
    """Raise DataError (exit 3) naming the file when its SHA-256 is not the published one."""
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual != sha256:
        raise DataError(
            f"Data file '{path}' is corrupt or not the published file: SHA-256 {actual}, expected {sha256}. "
            "Delete it (it will be downloaded again) or replace it with the original.")


def locate(name: str, files: list[str], data_dir: Optional[str] = None,
           urls: Optional[dict[str, str]] = None, sha256: Optional[dict[str, str]] = None,
           download: bool = True) -> Path:
    """Return the folder ROOT/name holding `files` from the first root that has ROOT/name.

    A root whose folder exists but lacks a file is an error naming the file (no silent fall-back
    to another copy). When no root has the folder, the files are downloaded from `urls` into the
    first writable root among --data-dir, $TRAINLAB_DATA and ~/.cache/trainlab, each checked
    against `sha256` before it is moved into place.
    """
    roots = data_roots(data_dir)
    for root in roots:
        folder = root / name
        if folder.is_dir():
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise DataError(
                    f"Dataset folder '{folder}' is incomplete: missing {', '.join(missing)}. "
                    f"Put the original files there or remove the folder so another root is used.")
            return folder
    if download and urls:
        return _download(name, files, roots, urls, sha256 or {})
    expected = ", ".join(files)
    searched = "\n  ".join(str(r / name) for r in roots)
    how = "" if urls else f" {name} has no public download address: put the files there yourself."
    raise DataError(
        f"Dataset '{name}' not found. Searched:\n  {searched}\nExpected files: {expected}.{how}\n"
        "Put the files in one of these folders, set $TRAINLAB_DATA or pass --data-dir"
        + (", or run online so they can be downloaded." if urls else "."))


def _download(name: str, files: list[str], roots: list[Path], urls: dict[str, str],
              sha256: dict[str, str]) -> Path:
    target = None
    for root in roots[:3]:  # never write into system folders
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK):
                target = root / name
                break
        except OSError:
            continue
    if target is None:
        raise DataError(f"Dataset '{name}' must be downloaded but no data root is writable: "
                        f"{', '.join(str(r) for r in roots[:3])}.")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        for f in files:
            url = urls[f]
            tmp = staging / f
            try:
                with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                searched = "\n  ".join(str(r / name) for r in roots)
                raise DataError(
                    f"Dataset '{name}' not found locally and the download of {url} failed ({e}). "
                    f"Searched:\n  {searched}\nExpected files: {', '.join(files)}. Put the files in one "
                    "of these folders, set $TRAINLAB_DATA or pass --data-dir.") from None
            verify(tmp, sha256.get(f))
        staging.rename(target)  # the folder appears whole or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
