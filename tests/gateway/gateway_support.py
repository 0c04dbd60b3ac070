"""Helpers for the gateway's end-to-end tests: a served gateway next to the admin's portal client,
workspaces, MaaS models, keys and rules made through the portal's own API, and the usage rows."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.app import create_gateway
from gateway.core import Gateway
from portal.observe.recorder import record
from portal.observe.states import ReplicaObservation
from portal.services import Services
from store.db import transaction
from store.models import ServingPlacement, UsageRecord
from tests.gateway.test_limits_helpers import REDIS_URL, delete_prefix, redis_reason


@contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, lifespan on (the gateway starts and
    stops in the server's own event loop); yields the base URL. `options` go to `uvicorn.Config`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY, see simulator
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class Harness:
    client: TestClient  # the portal, as the platform admin
    services: Services
    gateway: Gateway
    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)  # name -> full secret
    key_ids: dict[str, str] = field(default_factory=dict)  # name -> public id
    opened: list[openai.OpenAI] = field(default_factory=list)

    # -- portal objects ------------------------------------------------------------------------
    def workspace(self, slug: str, **quota: Any) -> None:
        r = self.client.post("/api/workspaces", json={"slug": slug, "name": slug.title()})
        assert r.status_code in (201, 409), r.text
        if quota:
            r = self.client.put(f"/api/workspaces/{slug}/quota", json=quota)
            assert r.status_code == 200, r.text

    def model(
        self,
        public_id: str,
        targets: list[dict[str, Any]],
        *,
        prices: tuple[str, str, str] = ("1", "2", "0.5"),
        **extra: Any,
    ) -> int:
        body = {
            "public_id": public_id,
            "targets": targets,
            "enabled": True,
            "visibility": "all",
            "price_input_per_m": float(prices[0]),
            "price_output_per_m": float(prices[1]),
            "price_cached_per_m": float(prices[2]),
            **extra,
        }
        r = self.client.post("/api/maas-models", json=body)
        assert r.status_code == 201, r.text
        model_id: int = r.json()["id"]
        return model_id

    def key(self, name: str, workspace: str, **extra: Any) -> str:
        r = self.client.post(f"/api/workspaces/{workspace}/api-keys", json={"name": name, **extra})
        assert r.status_code == 201, r.text
        self.keys[name] = r.json()["secret_key"]
        self.key_ids[name] = r.json()["id"]
        return self.keys[name]

    def rule(self, **body: Any) -> int:
        r = self.client.post("/api/rate-limits", json=body)
        assert r.status_code == 201, r.text
        rule_id: int = r.json()["id"]
        return rule_id

    # -- clients ---------------------------------------------------------------------------------
    def sdk(self, key: str = "main", **options: Any) -> openai.OpenAI:
        """A sync client (closed with the harness)."""
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[key], max_retries=0, **options)
        self.opened.append(client)
        return client

    def async_sdk(self, key: str = "main", **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.keys[key], max_retries=0, **options)

    def post(self, path: str, body: dict[str, Any], key: str = "main", **kw: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1{path}",
            json=body,
            headers={"authorization": f"Bearer {self.keys[key]}"},
            timeout=30,
            **kw,
        )

    # -- records ---------------------------------------------------------------------------------
    def records(self, n: int | None = None, timeout: float = 10) -> list[UsageRecord]:
        """The usage rows, oldest first, once `n` of them exist (streams record after the last byte)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.gateway.writer.flush(timeout)
            with self.services.sessions() as session:
                rows = list(session.scalars(select(UsageRecord).order_by(UsageRecord.id)))
            if n is None or len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.02)


@contextmanager
def harness(client: TestClient, services: Services, gateway: Gateway | None = None) -> Iterator[Harness]:
    gateway = gateway or Gateway(services)
    h = Harness(client, services, gateway)
    with serve(create_gateway(services, gateway=gateway)) as url:
        h.url = url
        try:
            yield h
        finally:
            for sdk in h.opened:
                sdk.close()


@contextmanager
def limiter_backend(services: Services, backend: str) -> Iterator[None]:
    """Run the gateway's limits and quotas in process (`local`) or on Redis under a prefix of this
    test's own, deleted afterwards; a Redis test is skipped, with the reason, when Redis is absent."""
    if backend != "redis":
        yield
        return
    reason = redis_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"mft{uuid.uuid4().hex[:8]}"
    services.settings = services.settings.model_copy(
        update={"redis_url": REDIS_URL, "gateway_redis_prefix": prefix}
    )
    try:
        yield
    finally:
        delete_prefix(prefix)


def observe(services: Services, serving: str, region: str, *replicas: ReplicaObservation) -> None:
    """What an observer would write for one placement of the demo stack."""
    with transaction(services.sessions) as session:
        placement = session.scalars(
            select(ServingPlacement).where(
                ServingPlacement.serving == serving, ServingPlacement.region == region
            )
        ).one()
        record(session, placement, list(replicas))
