"""Stop requests during training: Ctrl-C (SIGINT) or a scheduler's SIGTERM sets a flag the loop reads after each step."""

from __future__ import annotations

import signal
import threading
from typing import Optional


class StopFlag:
    """SIGINT or SIGTERM sets a flag; the loop saves a resumable checkpoint after the current step.

    The loop then exits 130 (Ctrl-C) or 143 (SIGTERM, what SLURM and Kubernetes send before they
    kill a job: 128 + 15). A second signal interrupts at once (the previous last.pt stays whole:
    writes are atomic). Outside the main thread (a search worker thread) no handler can be
    installed and the flag stays down.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None  # the first signal received, None while none came
        self.previous: dict[int, object] = {}

    @property
    def raised(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:
            if signum == signal.SIGTERM:
                raise SystemExit(128 + signal.SIGTERM)
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
