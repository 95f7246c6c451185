"""The run directory: its paths, atomic writes, metrics.jsonl and summary.json."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os has no getter) and put it back


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null (a diverged loss reads as null, not garbage)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        try:  # fast path for long lists of numbers: their sum (in C) is finite only if every one is
            if math.isfinite(sum(value)):
                return list(value)
        except (TypeError, OverflowError):  # not all numbers (nested lists, None, text): walk them
            pass
        return [_clean(v) for v in value]
    return value


def to_json(obj: Any, indent: Optional[int] = 2) -> str:
    return json.dumps(_clean(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, obj: Any, indent: Optional[int] = 2) -> None:
    """`obj` as strict JSON (NaN/inf written as null); indent=None writes one line, several times
    faster for large arrays (json's C encoder only serves unindented output)."""
    atomic_write_text(path, to_json(obj, indent) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a short digest of the package's source: which code made a run.

    Computed once per process (the code that was imported is the code that runs): a packed search
    writes it into every member's checkpoints and summary.
    """
    from . import __version__

    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


@dataclass
class RunDir:
    """Paths of one run: config.yaml, metrics.jsonl, checkpoints/, summary.json, eval/."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def tokenizer(self) -> Path:
        """Language-model runs: the tokenizer fitted at the start, read back by resume and generate."""
        return self.path / "tokenizer.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @classmethod
    def create(cls, out: Optional[str | Path], name: str, root: str | Path = "runs") -> "RunDir":
        """`out` as given, else runs/<name>-<YYYYmmdd-HHMMSS> (suffixed -2, -3 on a clash)."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path(root) / f"{name}-{stamp}"
            path, n = base, 2
            while path.exists():
                path, n = Path(f"{base}-{n}"), n + 1
        else:
            path = Path(out)
            if path.exists() and any(path.iterdir()):
                raise ConfigError(
                    f"Output folder '{path}' already holds files. Choose another --out, delete it, "
                    f"or continue that run with `trainlab train --resume {path}`.")
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        return cls(path)

    def read_metrics(self) -> list[dict]:
        """The per-epoch rows; a missing file is an empty history."""
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl whole (it is small) so it is never torn, even mid-append."""
        atomic_write_text(self.metrics, "".join(to_json(r, indent=None) + "\n" for r in rows))
