"""Progress of long work (imports of large files): done / total, rows, rate and ETA.

One :class:`Progress` is updated by the worker (a thread) and read by whoever reports it: a
terminal bar (:class:`ProgressPrinter`), or the API's import jobs. Updates are plain attribute
writes from one thread; a reader sees a consistent enough snapshot (each value is one store).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

Listener = Callable[["Progress"], None]


class Progress:
    """``done`` of ``total`` units (bytes of a file), ``rows`` processed so far."""

    def __init__(
        self,
        total: int,
        listener: Listener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(total, 0)
        self.done = 0
        self.rows = 0
        self.clock = clock
        self.started = clock()
        self.finished: float | None = None
        self._listener = listener

    def advance(self, done: int, rows: int) -> None:
        self.done, self.rows = min(done, self.total) if self.total else done, rows
        if self._listener is not None:
            self._listener(self)

    def finish(self) -> None:
        self.finished = self.clock()
        if self.total:
            self.done = self.total
        if self._listener is not None:
            self._listener(self)

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else self.clock()
        return max(end - self.started, 0.0)

    @property
    def fraction(self) -> float:
        if self.finished is not None:
            return 1.0
        return self.done / self.total if self.total else 0.0

    @property
    def rate(self) -> float:
        """Rows per second so far."""
        elapsed = self.elapsed
        return self.rows / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before anything is known."""
        fraction = self.fraction
        if self.finished is not None:
            return 0.0
        if fraction <= 0:
            return None
        return self.elapsed * (1 - fraction) / fraction

    def as_json(self) -> dict[str, Any]:
        eta = self.eta
        return {
            "done": self.done,
            "total": self.total,
            "percent": round(100 * self.fraction, 1),
            "rows": self.rows,
            "rows_per_second": round(self.rate, 1),
            "elapsed_seconds": round(self.elapsed, 3),
            "eta_seconds": None if eta is None else round(eta, 1),
        }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class ProgressPrinter:
    """A bar with rate and ETA redrawn at most 10 times a second on a terminal; one line per
    10% otherwise (a log file or a pipe gets a readable record, not carriage returns)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1

    def __call__(self, p: Progress) -> None:
        line = (
            f"{self.label}: {100 * p.fraction:5.1f}% {p.rows} rows, {p.rate:,.0f} rows/s, "
            f"ETA {_duration(p.eta)}"
        )
        if self.tty:
            now = p.clock()
            if p.finished is None and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(30 * p.fraction)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {line}")
            if p.finished is not None:
                self.stream.write("\n")
        else:
            tenth = int(10 * p.fraction)
            if tenth == self._last_tenth or (tenth == 10 and p.finished is None):
                return
            self._last_tenth = tenth
            self.stream.write(line + "\n")
        self.stream.flush()
