"""Errors a user can act on, each carrying the exit code of DESIGN.md."""


class TrainlabError(Exception):
    """A problem the user can fix; the CLI prints the message (no traceback) and exits."""

    exit_code = 1


class ConfigError(TrainlabError):
    """Bad usage or a bad config value (exit 2)."""

    exit_code = 2


class DiskFull(TrainlabError):
    """A write to the run directory found the disk full, the quota spent or the file-size limit
    reached (exit 2); the previous file is intact and `--resume` continues once space is freed."""

    exit_code = 2


class DataError(TrainlabError):
    """A dataset is missing, truncated, corrupt or does not fit the config (exit 3)."""

    exit_code = 3


class DivergedError(TrainlabError):
    """The loss became NaN or infinite (exit 4); the last good checkpoint is kept."""

    exit_code = 4


class Interrupted(TrainlabError):
    """Ctrl-C: a resumable checkpoint was saved (exit 130)."""

    exit_code = 130


class Terminated(Interrupted):
    """SIGTERM (a scheduler's stop request): a resumable checkpoint was saved (exit 143 = 128 + 15)."""

    exit_code = 143
