"""Stop requests while training: the first Ctrl-C or SIGTERM asks for a clean stop at the end of the step (a
checkpoint is kept); a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """Context manager that records the first SIGINT/SIGTERM in ``requested`` (main thread only)."""

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
