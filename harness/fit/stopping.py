"""Stopping a long fit at a generation boundary: ``--stop-after DURATION`` and SIGTERM / SIGINT.

The fit asks :meth:`Stopper.reason` before every generation. It stops there (its state is already
saved: the loop writes ``state.pkl`` atomically after every generation) when a SIGTERM or SIGINT
arrived during the previous generation, or when ``--stop-after`` would probably be passed: the time
since the command started plus the previous generation's wall time is over the limit. A second
signal stops at once (``KeyboardInterrupt``; the state on disk is still the last generation's).
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time

from harness.errors import UsageError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([dhms])")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)[dhms])+")  # e.g. 2h15m: numbers, each with its unit
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def now() -> float:
    """The clock every stop decision reads (monotonic seconds; tests replace it)."""
    return time.monotonic()


def parse_duration(text: str) -> float:
    """``"2h"``, ``"90m"``, ``"2h15m"``, ``"3600s"``, ``"1.5d"`` or a bare number of seconds → seconds (> 0)."""
    t = text.strip().lower()
    try:
        seconds = float(t) if t and t[-1] not in _UNITS else math.nan
    except ValueError:
        seconds = math.nan
    if math.isnan(seconds) and _DURATION.fullmatch(t):
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(t))
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--stop-after {text!r} is not a duration; use e.g. 2h, 90m, 2h15m, 3600s or 3600 (seconds)")
    return seconds


class Stopper:
    """When to stop: after ``limit_s`` seconds (``None``: no limit) counted from construction, or
    on a signal (:meth:`handling_signals`)."""

    def __init__(self, limit_s: float | None = None, text: str | None = None):
        self.limit_s, self.text = limit_s, text if text is not None else f"{limit_s}s"
        self.start = now()
        self.signal: str | None = None  # name of the first SIGTERM/SIGINT received

    def reason(self, estimate_s: float | None) -> str | None:
        """Why not to start the next generation (``None``: start it). ``estimate_s``: how long it
        will probably take (the previous generation's wall time; ``None`` when there was none)."""
        if self.signal is not None:
            return f"{self.signal} received"
        if self.limit_s is None:
            return None
        elapsed = now() - self.start
        if elapsed >= self.limit_s:
            return f"--stop-after {self.text} reached after {elapsed:.0f} s"
        if estimate_s is not None and elapsed + estimate_s > self.limit_s:
            return (f"--stop-after {self.text}: {elapsed:.0f} s used, and the next generation would take "
                    f"~{estimate_s:.0f} s more")
        return None

    @contextlib.contextmanager
    def handling_signals(self):
        """Within this block the first SIGTERM/SIGINT only sets :attr:`signal`; a second one raises
        ``KeyboardInterrupt``. Outside the main thread (where Python cannot install handlers) it does
        nothing."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum, frame):
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in _SIGNALS}
        try:
            yield self
        finally:
            for s, old in previous.items():
                signal.signal(s, signal.SIG_DFL if old is None else old)
