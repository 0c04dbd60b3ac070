"""The part buffers of one copy: at most `count` alive, the full-size ones reused.

Reusing them keeps the process's memory flat over a long copy. Fresh 8 MiB allocations freed from many
threads leave glibc's arenas fragmented (its mmap threshold rises after the first free), and the
resident size creeps up with the bytes copied; a fixed set of buffers does not.
"""

from __future__ import annotations

import threading

from portal.files.errors import Cancelled


class Buffers:
    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self._slots = threading.Semaphore(count)
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, length: int, cancel: threading.Event) -> bytearray:
        """A buffer of exactly `length` bytes, once one is free (or a cancel)."""
        while not self._slots.acquire(timeout=0.5):
            if cancel.is_set():
                raise Cancelled("cancelled")
        if length == self.size:
            with self._lock:
                if self._free:
                    return self._free.pop()
        return bytearray(length)  # the last part of a file, or a file with larger parts

    def give(self, buf: bytearray) -> None:
        if len(buf) == self.size:
            with self._lock:
                self._free.append(buf)
        self._slots.release()


__all__ = ["Buffers"]
