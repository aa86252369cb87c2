"""Caffe's solver signal handling: SIGINT and SIGHUP each map to an action (stop, snapshot or
none) that the solver picks up between iterations, so an interrupted run keeps its progress."""
from __future__ import annotations

import signal

ACTIONS = ("stop", "snapshot", "none")


class SignalActions:
    """Context manager; calling it returns the action requested since the last call."""

    def __init__(self, sigint: str = "stop", sighup: str = "snapshot"):
        for name, value in (("sigint_effect", sigint), ("sighup_effect", sighup)):
            if value not in ACTIONS:
                raise ValueError(f"{name} must be one of {', '.join(ACTIONS)}, got {value!r}")
        self.effects = {signal.SIGINT: sigint, signal.SIGHUP: sighup}
        self.pending = "none"
        self.previous = {}

    def _handle(self, signum, frame):
        self.pending = self.effects[signum]

    def __enter__(self):
        for sig in self.effects:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def __call__(self) -> str:
        action, self.pending = self.pending, "none"
        return action
