"""Where a replica's log comes from: one `LogSource` per region runtime.

A runtime that can show logs registers a source for its name (`register`); the API asks
`log_source_for(placement.runtime)`. A source answers the last lines (`tail`, blocking: the API runs
it in a thread; `previous` = the run before the last restart) and follows new lines as they come
(`follow`, an async iterator the API stops when the client goes away).

`local` regions: the supervisor writes each replica's output to the file named in
`replica.details["log"]`, and keeps the previous run's in `replica.details["previous_log"]`; the
source reads those files. `kubernetes` regions: the cluster watcher plugs its pod-log reader in with
`register("kubernetes", …)`; until it does, asking answers that logs need the watcher.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from portal.messages import msg
from store.models import ServingPlacement, ServingReplica

FOLLOW_POLL_SECONDS = 0.25
READ_CHUNK = 64 * 1024


class LogsUnavailable(Exception):
    """This runtime cannot show logs here (the API answers 501 with the reason)."""


class LogMissing(Exception):
    """There is no log (yet): an empty log, and this note says why."""


class LogSource(Protocol):
    def tail(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int, previous: bool
    ) -> list[str]:
        """The last `lines` lines (of the previous run when `previous`); LogMissing when none."""
        ...

    def follow(self, placement: ServingPlacement, replica: ServingReplica, lines: int) -> AsyncIterator[str]:
        """The last `lines` lines, then each new line as it is written, until cancelled."""
        ...


def _last_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of `path`, reading backwards from the end (a log can be large)."""
    with path.open("rb") as f:
        return _lines_before(f, os.fstat(f.fileno()).st_size, lines)


def _lines_before(f: BinaryIO, end: int, lines: int) -> list[str]:
    """The last `lines` complete lines of `f` before offset `end`."""
    if lines <= 0:
        return []
    data = b""
    while end > 0 and data.count(b"\n") <= lines:
        start = max(0, end - READ_CHUNK)
        f.seek(start)
        data = f.read(end - start) + data
        end = start
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


class LocalFileLogs:
    """Logs of supervised processes, from the files the local supervisor writes."""

    def _path(self, replica: ServingReplica, previous: bool) -> Path:
        key = "previous_log" if previous else "log"
        value = (replica.details or {}).get(key)
        if not value:
            if previous:
                raise LogMissing(msg("replica {replica} has no previous run recorded", replica=replica.name))
            raise LogMissing(msg("replica {replica} has no log file recorded yet", replica=replica.name))
        return Path(str(value))

    def tail(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int, previous: bool
    ) -> list[str]:
        path = self._path(replica, previous)
        try:
            return _last_lines(path, lines)
        except FileNotFoundError:
            missing = msg("the log file of replica {replica} does not exist (yet)", replica=replica.name)
            raise LogMissing(missing) from None

    async def follow(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int
    ) -> AsyncIterator[str]:
        path = self._path(replica, False)
        while not path.exists():  # the process may not have started yet
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        handle = path.open("rb")
        try:
            # The last lines and what follows come from one handle and one offset: nothing written in
            # between is lost or shown twice.
            stat = os.fstat(handle.fileno())
            identity, end = stat.st_ino, stat.st_size
            for line in await asyncio.to_thread(_lines_before, handle, end, lines):
                yield line
            handle.seek(end)
            pending = b""
            while True:
                chunk = handle.read(READ_CHUNK)
                if chunk:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for raw in complete:
                        yield raw.decode("utf-8", errors="replace")
                    continue
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    continue
                # A new run (the supervisor moved the log aside) or a truncated file: start over.
                if now.st_ino != identity or now.st_size < handle.tell():
                    handle.close()
                    handle = path.open("rb")
                    identity, pending = os.fstat(handle.fileno()).st_ino, b""
        finally:
            handle.close()


class WatcherMissing:
    """Stands for the kubernetes runtime until its cluster watcher registers its pod-log reader."""

    REASON = "logs of kubernetes regions need the cluster watcher"

    def tail(
        self, placement: ServingPlacement, replica: ServingReplica, lines: int, previous: bool
    ) -> list[str]:
        raise LogsUnavailable(self.REASON)

    def follow(self, placement: ServingPlacement, replica: ServingReplica, lines: int) -> AsyncIterator[str]:
        raise LogsUnavailable(self.REASON)


_SOURCES: dict[str, LogSource] = {"local": LocalFileLogs(), "kubernetes": WatcherMissing()}


def register(runtime: str, source: LogSource) -> None:
    """Make `source` the log source of `runtime` regions (the kubernetes watcher calls this)."""
    _SOURCES[runtime] = source


def log_source_for(runtime: str) -> LogSource:
    source = _SOURCES.get(runtime)
    if source is None:
        raise LogsUnavailable(msg("regions of runtime {runtime!r} have no log source", runtime=runtime))
    return source
