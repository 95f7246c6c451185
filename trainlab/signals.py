"""Stop requests during training: Ctrl-C sets a flag the loop reads after each step."""

from __future__ import annotations

import signal
import threading


class SigintFlag:
    """Ctrl-C sets a flag; the loop saves a resumable checkpoint after the current step and exits 130.

    A second Ctrl-C interrupts at once (the previous last.pt stays whole: writes are atomic). Outside
    the main thread (a search worker thread) no handler can be installed and the flag stays down.
    """

    def __init__(self) -> None:
        self.raised = False
        self.previous = None

    def __enter__(self) -> "SigintFlag":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
