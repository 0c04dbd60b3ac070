"""Readiness, asked the way the kubelet asks the engine's readiness probe: an HTTP GET of the launch's
health path on the replica's port (a status from 200 to 399 passes), or a TCP connect when the engine
has no health path."""

from __future__ import annotations

import http.client
import socket

from portal.observe.local.command import LOOPBACK

TIMEOUT_SECONDS = 1.0  # short: probes run in the supervisor's pass, one replica after another


def probe(port: int, path: str | None, timeout: float = TIMEOUT_SECONDS) -> bool:
    if path is None:
        try:
            socket.create_connection((LOOPBACK, port), timeout=timeout).close()
        except OSError:
            return False
        return True
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "modelfleet-local-runtime"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return 200 <= status < 400


def describe(port: int, path: str | None) -> str:
    """What the probe asks, in words (for `loading` messages)."""
    return f"GET http://{LOOPBACK}:{port}{path}" if path else f"a TCP connection to {LOOPBACK}:{port}"
