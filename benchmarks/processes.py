"""Servers in child processes for benchmarks and end-to-end tests: a free port, start, wait, stop."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tcp_sockets(port: int, state: str) -> set[str]:
    """The inodes of this machine's TCP sockets on local `port` in `state` ("0A" listening, "01"
    established), from /proc/net (Linux)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                found.add(fields[9])
    return found


def wait_listening(port: int, sockets: int, timeout: float = 30) -> None:
    """Until `sockets` sockets listen on `port`: the workers of a `--workers N` gateway each bind their
    own, and one answering a health check says nothing of the others."""
    deadline = time.monotonic() + timeout
    while len(tcp_sockets(port, "0A")) < sockets:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sockets} listeners on port {port} did not appear in {timeout:g} s")
        time.sleep(0.05)


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start (exit {process.poll()})")
        time.sleep(0.1)


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], health: str, what: str, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_up(health, process, what)
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
