"""Pod logs through the API server's pod log endpoint (`GET …/pods/{name}/log`, text/plain).

`pod_logs` returns the last lines (of the current run, or with `previous=True` of the crashed one);
`follow_pod_logs` streams lines as the container writes them (`follow=true`) until the caller stops
or the container ends. The callers (the API) decide who may read which pod; these check the
arguments and say why the cluster refused (a container still waiting to start answers 400 with a
`Status` that says so).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2

from portal.observe.kubernetes.access import RegionCluster

MAX_TAIL_LINES = 10_000
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class LogsUnavailable(Exception):
    """The cluster did not give the logs: the pod or container does not exist or has not started."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def log_params(
    pod: str, container: str | None, tail_lines: int | None, previous: bool, follow: bool = False
) -> dict[str, str]:
    """The query of the log endpoint; ValueError naming the argument for a bad one."""
    if not DNS_NAME.match(pod):
        raise ValueError(f"pod: {pod!r} is not a pod name")
    if container is not None and not DNS_NAME.match(container):
        raise ValueError(f"container: {container!r} is not a container name")
    if tail_lines is not None and not 1 <= tail_lines <= MAX_TAIL_LINES:
        raise ValueError(f"tail_lines: {tail_lines} is not between 1 and {MAX_TAIL_LINES}")
    if previous and follow:
        raise ValueError("previous: the logs of a previous run cannot be followed")
    params: dict[str, str] = {}
    if container:
        params["container"] = container
    if tail_lines is not None:
        params["tailLines"] = str(tail_lines)
    if previous:
        params["previous"] = "true"
    if follow:
        params["follow"] = "true"
    return params


def log_path(region: RegionCluster, pod: str) -> str:
    return f"/api/v1/namespaces/{region.namespace}/pods/{pod}/log"


async def pod_logs(
    region: RegionCluster,
    pod: str,
    container: str | None = None,
    tail_lines: int = 200,
    previous: bool = False,
    *,
    client: httpx2.AsyncClient | None = None,
) -> str:
    """The last `tail_lines` lines of `pod`'s `container` (the only one when None)."""
    params = log_params(pod, container, tail_lines, previous)
    own = client is None
    http = client or region.client()
    try:
        response = await http.get(log_path(region, pod), params=params)
        if response.status_code != 200:
            raise LogsUnavailable(response.status_code, _status_message(response.content))
        return response.text
    finally:
        if own:
            await http.aclose()


async def follow_pod_logs(
    region: RegionCluster,
    pod: str,
    container: str | None = None,
    tail_lines: int | None = 200,
    *,
    read_seconds: float = 3600.0,
) -> AsyncIterator[str]:
    """Lines of `pod`'s log as they are written (without their newline), starting with the last
    `tail_lines`; ends when the container does (or after `read_seconds` of silence)."""
    params = log_params(pod, container, tail_lines, previous=False, follow=True)
    async with (
        region.client(read_seconds=read_seconds) as http,
        http.stream("GET", log_path(region, pod), params=params) as response,
    ):
        if response.status_code != 200:
            raise LogsUnavailable(response.status_code, _status_message(await response.aread()))
        async for line in response.aiter_lines():
            yield line.rstrip("\n")


def _status_message(body: bytes) -> str:
    """The `message` of the API server's Status body, else the start of the body."""
    try:
        status: Any = json.loads(body)
        return str(status.get("message") or status)
    except (ValueError, AttributeError):
        return body[:500].decode(errors="replace")
