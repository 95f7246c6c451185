"""Optuna's storage: imported, opened (journal file or database), heartbeats, dead trials retried."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Optional

from ..errors import ConfigError


def import_optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("trainlab search needs Optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
    return optuna


def _retry_callback():
    import optuna.storages as s
    cls = getattr(s, "RetryHeartbeatStaleTrialCallback", None) or s.RetryFailedTrialCallback
    return cls(max_retry=3)


def open_storage(storage: Optional[str], out: Path, heartbeat: int):
    """Optuna storage: a journal file in `out` by default, else the RDB URL (postgresql://, sqlite:///).

    An RDB storage records heartbeats: a trial whose worker died is failed after 2 x `heartbeat`
    seconds and retried (RetryHeartbeatStaleTrialCallback). Unreachable: ConfigError, exit 2.
    """
    optuna = import_optuna()
    if storage is None or storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend
        path = Path(storage[len("journal:"):]) if storage else out / "journal.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict = {"pool_pre_ping": True}
    url = _with_driver(storage)
    if storage.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    options = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options,
                                                  heartbeat_stale_trial_callback=_retry_callback())
            except TypeError:  # Optuna < 4.9 names it failed_trial_callback
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options,
                                                  failed_trial_callback=_retry_callback())
    except ImportError as e:
        raise ConfigError(f"--storage {_redact(storage)} needs a database driver that is not installed ({e}). "
                          "For PostgreSQL: pip install 'trainlab[postgres]' (psycopg2-binary).") from None
    except Exception as e:  # sqlalchemy's OperationalError, ArgumentError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"Cannot use the search storage {_redact(storage)}: {first}. Check that the server is "
                          "running and reachable, the database exists and the URL's user and password are "
                          "right (e.g. postgresql://user:password@127.0.0.1:5432/dbname).") from None


def _with_driver(url: str) -> str:
    """postgresql:// with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg (3),
    trainlab's `postgres` extra installs psycopg2-binary."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


class Heartbeat:
    """Records heartbeats of the trials this worker runs, every `interval` seconds (RDB storage)."""

    def __init__(self, storage, interval: Optional[int]):
        from optuna.storages._heartbeat import is_heartbeat_enabled
        self.storage, self.interval = storage, interval
        self.enabled = interval is not None and is_heartbeat_enabled(storage)
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None
        if self.enabled:
            self.thread = threading.Thread(target=self._run, daemon=True, name="trainlab-heartbeat")
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = list(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a finished trial or a lost connection: the next beat retries
                    pass

    def add(self, trial_id: int) -> None:
        if self.enabled:
            self.storage.record_heartbeat(trial_id)
            with self.lock:
                self.ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def requeue_interrupted(study) -> None:
    """Trials a killed process left RUNNING: failed, and queued again (as a dead RDB worker's are)."""
    from optuna.trial import TrialState
    callback = _retry_callback()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failure", "interrupted")
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except Exception:
            continue
        callback(study, study._storage.get_trial(t._trial_id))
