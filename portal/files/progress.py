"""How far a download is: bytes and files done of their totals, the rate over the last seconds and
the time left at that rate, handed to a callback at most every `every` seconds (and at each change of
phase), from whichever thread moved the bytes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Phase = Literal["listing", "downloading", "verifying", "ready"]
WINDOW = 10.0  # seconds of history the rate is taken over: steady, yet follows a change of speed


@dataclass(frozen=True)
class Progress:
    phase: Phase
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    rate: float = 0.0  # bytes per second moved by this run (files found already copied are not counted)
    eta_seconds: float | None = None  # None until there is a rate to go by

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Callback = Callable[[Progress], None]


class Meter:
    """Thread-safe counters behind `Progress`."""

    def __init__(self, callback: Callback | None = None, every: float = 0.5) -> None:
        self._callback = callback
        self._every = every
        self._lock = threading.Lock()
        self._phase: Phase = "listing"
        self._bytes = self._bytes_total = self._files = self._files_total = 0
        self._moved = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._last = 0.0

    def begin(self, bytes_total: int, files_total: int) -> None:
        with self._lock:
            self._bytes_total, self._files_total = bytes_total, files_total
            self._phase = "downloading"
            self._samples.append((time.monotonic(), 0))
        self._emit(force=True)

    def moved(self, n: int) -> None:
        """`n` bytes arrived from the source (negative: bytes of a cut-off read that will come again)."""
        with self._lock:
            self._bytes += n
            self._moved += n
        self._emit()

    def skipped(self, n: int) -> None:
        """`n` bytes found in the store already (an earlier attempt's): done, but not this run's rate."""
        with self._lock:
            self._bytes += n
        self._emit()

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
        self._emit(force=True)

    def phase(self, phase: Phase) -> None:
        with self._lock:
            changed, self._phase = self._phase != phase, phase
        if changed:
            self._emit(force=True)

    def snapshot(self) -> Progress:
        with self._lock:
            now = time.monotonic()
            self._samples.append((now, self._moved))
            while len(self._samples) > 2 and now - self._samples[1][0] > WINDOW:
                self._samples.popleft()
            t0, m0 = self._samples[0]
            rate = (self._moved - m0) / (now - t0) if now - t0 > 0.05 else 0.0
            left = max(0, self._bytes_total - self._bytes)
            eta = left / rate if rate > 0 else (0.0 if left == 0 and self._bytes_total else None)
            return Progress(
                self._phase,
                self._bytes,
                self._bytes_total,
                self._files,
                self._files_total,
                round(rate, 1),
                eta,
            )

    def _emit(self, force: bool = False) -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        self._callback(self.snapshot())


__all__ = ["Callback", "Meter", "Phase", "Progress"]
