"""A local replica's log: what its process wrote to stdout and stderr (the current run, and the run
before the last restart as `previous`), read as a tail or followed as it grows. For the API: callers
pass names from a request; anything that is not a plain name is refused, never turned into a path."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

from portal.observe.local.replica import PlacementKey

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
TAIL_BYTES = 1 << 20  # a tail reads at most the last MiB


class LogNotFound(LookupError):
    pass


def runtime_root(data_dir: Path) -> Path:
    """Where the local runtime keeps replica logs and state files."""
    return data_dir / "runtime"


def replica_log(
    data_dir: Path, stack: str, serving: str, region: str, pool: str, replica: str, *, previous: bool = False
) -> Path:
    """The log file of `replica` (LogNotFound when there is none, e.g. no previous run)."""
    for field, value in (
        ("stack", stack),
        ("serving", serving),
        ("region", region),
        ("pool", pool),
        ("replica", replica),
    ):
        if not NAME.match(value) or ".." in value:
            raise LogNotFound(f"{field}: {value!r} is not a name")
    directory = PlacementKey(stack, serving, region, pool).directory(runtime_root(data_dir))
    path = directory / f"{replica}{'.previous.log' if previous else '.log'}"
    if not path.is_file():
        run = "previous run" if previous else "run"
        raise LogNotFound(f"replica {replica!r} has no log of its {run} on this machine")
    return path


def tail(path: Path, lines: int = 100) -> list[str]:
    """The last `lines` lines of `path` (without line ends; [] when it does not exist)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


async def follow(path: Path, *, lines: int = 100, poll_seconds: float = 0.25) -> AsyncIterator[str]:
    """The last `lines` lines, then every line written after, as it is written. A restart starts a new
    file (the old one becomes `.previous.log`): following goes on in the new one from its start.
    Runs until the caller stops iterating (closing the generator)."""
    position, identity = _where(
        path
    )  # before the tail: a line written meanwhile may show twice, never not at all
    for line in tail(path, lines):
        yield line
    pending = b""
    while True:
        await asyncio.sleep(poll_seconds)
        size, now = _where(path)
        if now != identity or size < position:  # rotated, or truncated: read the new file from its start
            position, identity, pending = 0, now, b""
        if size <= position:
            continue
        with path.open("rb") as f:
            f.seek(position)
            chunk = f.read(size - position)
        position += len(chunk)
        *complete, pending = (pending + chunk).split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")


def _where(path: Path) -> tuple[int, tuple[int, int] | None]:
    """(size, identity) of the file now at `path`; (0, None) when there is none."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return 0, None
    return stat.st_size, (stat.st_dev, stat.st_ino)
