"""A file's digest computed while its parts stream, though they finish out of order.

Parts are read and uploaded several at a time; the digest (sha256, or git's blob id) needs the bytes
in order. Each finished part is handed over with its buffer; the buffers wait until every earlier
part arrived, then are hashed and given back to the copy's `Buffers`. Those are bounded, so memory
stays bounded even when an early part is slow: later parts wait to start instead of piling up.

No deadlock: parts start in submission order, so the earliest unhashed part of a file always holds
its buffer already and is running or done.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from portal.files.buffers import Buffers
from portal.files.listing import RemoteFile


def hasher_for(f: RemoteFile) -> Any:
    """The hash `f` is published with: sha256 for LFS files (and unknown digests), git's blob sha1
    for small git files (`"blob <size>\\0" + content`)."""
    if f.sha256 or not f.git_oid:
        return hashlib.sha256()
    return hashlib.sha1(f"blob {f.size}\0".encode())


class InOrderDigest:
    def __init__(self, f: RemoteFile, buffers: Buffers) -> None:
        self._hash = hasher_for(f)
        self._buffers = buffers
        self._lock = threading.Lock()
        self._next = 1
        self._waiting: dict[int, bytearray] = {}
        self.size = 0

    def done(self, number: int, data: bytearray) -> None:
        """Part `number` is uploaded: hash it and every part it was holding up; their buffers go back."""
        with self._lock:
            self._waiting[number] = data
            while self._next in self._waiting:
                chunk = self._waiting.pop(self._next)
                self._hash.update(chunk)
                self.size += len(chunk)
                self._buffers.give(chunk)
                self._next += 1

    def close(self) -> None:
        """Give back the buffers still waiting (after a failure or a cancel: the digest is not used)."""
        with self._lock:
            for buf in self._waiting.values():
                self._buffers.give(buf)
            self._waiting.clear()

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())


__all__ = ["InOrderDigest", "hasher_for"]
