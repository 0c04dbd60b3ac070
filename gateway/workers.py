"""`--workers N`: uvicorn's supervisor, with a listening socket of each worker's own.

uvicorn's workers share one listening socket, and each accepts every connection waiting when it wakes:
under keep-alive traffic the first worker awake takes nearly all of them and the rest idle (measured:
16 client connections split 15 to 1, one worker at 80 % of a core while the other slept, and the
latency tail of a saturated process). Here each worker binds the address itself with `SO_REUSEPORT`,
and the kernel spreads new connections over the workers' sockets by their addresses.

Supervision stays uvicorn's (`Multiprocess`: restarts, health pings, signals); only what a worker
listens on changes. The parent binds the address once with the same option, before any worker starts,
so a port in use is one clear error; it never listens. `SO_REUSEPORT` lets another process of the same
user bind the port too (it would share the connections): run one gateway per address.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

log = logging.getLogger("modelfleet.gateway")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) that other workers may bind too; OSError if the port is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Worker(multiprocess.Process):
    """A worker process that serves on a socket it binds itself (uvicorn hands each the parent's)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover (a child)
        try:
            own = listening_socket(self.config.host, self.config.port)
        except OSError as exc:
            log.error("gateway worker: cannot listen on %s:%s: %s", self.config.host, self.config.port, exc)
            sys.exit(STARTUP_FAILURE)
        super().target([own])


def serve(config: Config) -> None:
    """Run `config.workers` workers under uvicorn's supervisor until it is told to stop."""
    if config.port == 0:
        raise ValueError("--workers needs a fixed --port: each worker binds it")
    listening_socket(config.host, config.port).close()  # a taken port: one error, before any worker
    # uvicorn's supervisor makes its workers from the module's `Process` in three places (start,
    # restart, replace a dead one); ours differs only in the socket it serves on.
    supervisor: Any = multiprocess.Multiprocess(config, sockets=[])
    original, multiprocess.Process = multiprocess.Process, _Worker  # type: ignore[misc]
    try:
        supervisor.run()
    finally:
        multiprocess.Process = original  # type: ignore[misc]
