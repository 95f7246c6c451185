"""The run directory: its paths, atomic writes, metrics.jsonl, summary.json and its lock."""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError, DiskFull


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process umask (os has no getter) and put it back


# errno values that mean "no room for these bytes": a full disk, a spent quota, a file-size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see a torn file.

    A full disk, a spent quota or a file-size limit (ENOSPC, EDQUOT, EFBIG, at any of the write,
    the fsync or the rename) raises DiskFull (exit 2) naming the file, the bytes needed and free;
    the temp file is removed and `path`, never renamed over, keeps its previous content.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            raise _disk_full(path, len(data), e) from None
        raise


def _disk_full(path: Path, needed: int, e: OSError) -> DiskFull:
    """The DiskFull of a write of `needed` bytes to `path` that found no room: sizes, what is intact, what next."""
    try:
        free = f"has {shutil.disk_usage(path.parent).free:,} bytes free"
    except OSError:
        free = "did not report its free space"
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is spent",
           errno.EFBIG: "the file would exceed the largest file the filesystem or this process's file-size "
                        "limit (ulimit -f) allows"}[e.errno]
    kept = (f"The previous {path.name} is intact (it was not replaced) and the partial temp file was removed."
            if path.exists() else f"No {path.name} was written; the partial temp file was removed.")
    # The run directory is the folder with config.yaml: `path`'s own, or the one above checkpoints/.
    run = next((folder for folder in (path.parent, path.parent.parent) if (folder / "config.yaml").is_file()), None)
    if run is not None and path.name != "config.yaml":
        after = f"Free space, then continue with: trainlab train --resume {run}"
    else:
        after = "Free space, then run the command again."
    return DiskFull(f"Cannot write '{path}': {why} ({e.strerror or e}). The write needed {needed:,} bytes; "
                    f"'{path.parent}' {free}. {kept} {after}")


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


# ---------------------------------------------------------------- the run-directory lock

LOCK_NAME = ".lock"   # RUN/.lock: the flock'ed file; holds the holder's pid, host, start time and command


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_holder(fd: int) -> dict:
    """The JSON a holder wrote into the lock file; {} when empty (released cleanly) or unreadable."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
        return holder if isinstance(holder, dict) else {"pid": "?"}
    except (OSError, ValueError):
        return {"pid": "?"}  # a holder caught between flock and writing its pid, or a damaged file


def _describe(holder: dict) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    since = f", since {holder['started']}" if holder.get("started") else ""
    command = f": `{holder['command']}`" if holder.get("command") else ""
    return f"pid {pid} on host {host}{since}{command}"


def unwritable(folder: Path, e: OSError, what: str = "Output folder") -> ConfigError:
    """ConfigError (exit 2) naming the nearest existing folder above `folder` that refused the write."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        why = f"'{existing}' is a file, not a folder"
    elif existing == folder:
        why = f"'{folder}' is not writable ({e.strerror or e})"
    else:
        why = f"'{existing}' does not let folders be created in it ({e.strerror or e})"
    return ConfigError(f"{what} '{folder}' cannot be used: {why}. Nothing was trained. Choose an --out in a "
                       "folder you can write to (or fix its permissions).")


class RunLock:
    """An exclusive lock on a run directory, so two processes never write one run.

    An OS lock (fcntl.flock) on RUN/.lock, which also holds the holder's pid, host, start time and
    command for the error the second process prints. The kernel releases a flock when its holder
    exits, however it exits (SIGKILL, OOM killer, power loss of a local disk), so a dead process
    never blocks the folder: the next process takes the lock and, finding the dead one's pid still
    written in the file (a clean release empties it), warns that it took over. The file is never
    deleted: deleting it would let one process lock the unlinked file while another locks a new one.

    >>> with RunLock(Path("runs/seed_mlp-20261128-171500")):
    ...     pass   # no other process can train or resume in that folder meanwhile

    A second process is refused with ConfigError (exit 2) naming the holder's pid and host. The lock
    is per process: RunLock.hold() (what RunDir.create and RunDir.lock() use) hands the lock the
    process already holds to every caller in it, so resuming in the process whose train() was
    interrupted works; the process keeps the lock of the run directory it opened last until it opens
    another one or exits.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None
        self._finalizer = None

    def acquire(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise unwritable(self.folder, e, "Run directory") from None
        try:
            for attempt in range(25):  # 0.5 s at most: a holder between its flock and writing its pid,
                try:                   # or RunLock.holder's momentary probe, which writes nothing
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    holder = _read_holder(fd)
                    if holder.get("pid") not in (None, "?") or attempt == 24:
                        raise
                    time.sleep(0.02)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"Run directory '{self.folder}' is in use by another trainlab process ({_describe(holder)}). "
                "Two processes writing one run directory would corrupt it: wait for that one to finish or stop "
                "it (a stopped run continues with `trainlab train --resume`), or choose another --out.") from None
        except OSError as e:  # a filesystem without flock (some network mounts): fall back to the pid
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                    and holder["pid"] != os.getpid() and _pid_alive(holder["pid"]):
                os.close(fd)
                raise ConfigError(f"Run directory '{self.folder}' is in use by another trainlab process "
                                  f"({_describe(holder)}). Wait for it to finish or stop it.") from None
        previous = _read_holder(fd)
        if previous:
            host = previous.get("host")
            gone = ("which is no longer running" if host == socket.gethostname() and isinstance(previous.get("pid"), int)
                    and not _pid_alive(previous["pid"]) else "which no longer holds it")
            warnings.warn(f"Run directory '{self.folder}': taking over the lock left by {_describe(previous)}, "
                          f"{gone} (it was killed or crashed).", stacklevel=3)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["trainlab", *sys.argv[1:]])[:500]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError as e:  # a full disk: the flock holds without the note (the run's own writes then say so)
            if e.errno not in _NO_ROOM:
                os.close(fd)
                raise
        self._fd = fd
        self._finalizer = weakref.finalize(self, _release, fd, os.getpid())  # GC or exit: released
        _OPEN_FDS.add(fd)
        return self

    def release(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._fd = self._finalizer = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @classmethod
    def hold(cls, folder: str | Path) -> "RunLock":
        """The lock of `folder` this process already holds, else a newly acquired one."""
        key = os.path.realpath(folder)
        lock = _HELD.get(key)
        if lock is None or not lock.held:
            lock = cls(folder).acquire()
            _HELD[key] = lock
        _LAST[:] = [lock]
        return lock

    @staticmethod
    def holder(folder: str | Path) -> Optional[dict]:
        """Who holds `folder`'s lock right now ({"pid", "host", ...}), or None when no process does."""
        path = Path(folder) / LOCK_NAME
        lock = _HELD.get(os.path.realpath(folder))
        if lock is not None and lock.held:
            return {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it (the probe's shared lock goes with the close below)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None
        finally:
            os.close(fd)


_OPEN_FDS: set[int] = set()
# realpath -> the RunLock this process holds on it (alive while a RunDir, a `with` or _LAST holds it).
_HELD: "weakref.WeakValueDictionary[str, RunLock]" = weakref.WeakValueDictionary()
# The lock of the run directory the process opened last stays held until it opens another one (or
# exits): train() opens its folder on the writing process and passes on only the path, so the
# RunDir that locked it does not live as long as the run.
_LAST: list[RunLock] = []


def _release(fd: int, owner: int) -> None:
    """Empty the lock file (a clean release, no takeover warning for the next holder), then close it."""
    _OPEN_FDS.discard(fd)
    if os.getpid() != owner:
        return
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # the last descriptor of the open file: the kernel drops the flock


def _forget_in_child() -> None:
    """A forked child (DataLoader workers) closes its copies: the lock then dies with its holder,
    not with the last child. Closing a copy does not release the parent's lock."""
    for fd in list(_OPEN_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _OPEN_FDS.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _holds_files(folder: Path) -> bool:
    return any(p.name != LOCK_NAME for p in folder.iterdir())


@dataclass
class RunDir:
    """Paths of one run: config.yaml, metrics.jsonl, checkpoints/, summary.json, eval/; and its lock."""

    path: Path
    _lock: Optional[RunLock] = field(default=None, repr=False, compare=False)

    def lock(self) -> "RunDir":
        """Hold the folder's RunLock (until the process opens another run directory or exits); returns self.

        Raises ConfigError (exit 2) naming the other process's pid and host when one holds it.
        """
        if self._lock is None:
            self._lock = RunLock.hold(self.path)
        return self

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
        """`out` as given, else runs/<name>-<YYYYmmdd-HHMMSS> (suffixed -2, -3 on a clash), locked.

        The folder is locked before anything is written in it. A folder that cannot be created or
        written, that holds files, or that another process holds is a ConfigError (exit 2).
        """
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path(root) / f"{name}-{stamp}"
            path, n = base, 2
            while True:  # mkdir claims a name atomically: two runs started in one second get -2, -3
                try:
                    path.mkdir(parents=True)
                    break
                except FileExistsError:
                    path, n = Path(f"{base}-{n}"), n + 1
                except OSError as e:
                    raise unwritable(path, e) from None
        else:
            path = Path(out)
            if path.exists() and not path.is_dir():
                raise ConfigError(f"Output folder '{path}' is a file, not a folder. Choose another --out.")
            if path.is_dir() and _holds_files(path):
                holder = RunLock.holder(path)
                if holder is not None and holder.get("pid") != os.getpid():
                    raise ConfigError(f"Output folder '{path}' is in use by another trainlab process "
                                      f"({_describe(holder)}). Choose another --out.")
                raise cls._not_empty(path)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise unwritable(path, e) from None
        run = cls(path).lock()
        if _holds_files(path):  # filled by another process between the check above and the lock
            raise cls._not_empty(path)
        try:
            (path / "checkpoints").mkdir(exist_ok=True)
        except OSError as e:
            raise unwritable(path, e) from None
        return run

    @staticmethod
    def _not_empty(path: Path) -> ConfigError:
        return ConfigError(f"Output folder '{path}' already holds files. Choose another --out, delete it, "
                           f"or continue that run with `trainlab train --resume {path}`.")

    def read_metrics(self) -> list[dict]:
        """The per-epoch rows; a missing file is an empty history."""
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_metrics(self, rows: list[dict]) -> None:
        """Rewrite metrics.jsonl whole (it is small) so it is never torn, even mid-append."""
        atomic_write_text(self.metrics, "".join(to_json(r, indent=None) + "\n" for r in rows))
