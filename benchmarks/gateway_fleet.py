"""Gateways as an operator runs them, for the fault suite and `make soak`: N `python -m gateway`
processes on PostgreSQL, a Redis of their own that may be killed and started again empty, the engine
simulator upstream, and a workspace, a MaaS model, keys and limit rules made through the portal's API.

The shared Redis at 127.0.0.1:6379 is never touched: `OwnRedis` starts a `redis-server` of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from benchmarks.processes import free_port, server, wait_until_up
from portal.app import build_services, create_app
from portal.settings import Settings
from store.security import USER_TOKEN_PREFIX, issue

ROOT = Path(__file__).resolve().parents[1]


class Missing(RuntimeError):
    """A program this set-up needs is not installed (tests skip, the soak stops, saying which)."""


class OwnRedis:
    """A redis-server of its own, without persistence: a restart empties it."""

    def __init__(self, log: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Missing("redis-server is not installed: a Redis that may be killed is needed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis.from_url(self.url, socket_timeout=0.2, socket_connect_timeout=0.2)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@contextlib.contextmanager
def own_database(admin_url: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server at `admin_url`, dropped afterwards."""
    name = f"mf_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


Rules = Mapping[str, tuple[str, int] | None]  # key name -> (unit, limit), or None: no rule


def set_up(settings: Settings, engine_url: str, rules: Rules) -> dict[str, str]:
    """Workspace, model, keys and rules through the portal's own API; key name -> secret."""
    services = build_services(settings)
    try:
        with TestClient(create_app(services=services)) as portal:
            portal.headers["authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"

            def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
                response = portal.post(path, json=body)
                assert response.status_code in (200, 201), response.text
                out: dict[str, Any] = response.json()
                return out

            call("/api/workspaces", {"slug": "team", "name": "Team"})
            target = {"kind": "external", "base_url": f"{engine_url}/v1", "upstream_model": "sim"}
            call(
                "/api/maas-models",
                {"public_id": "chat", "targets": [target], "enabled": True, "visibility": "all"},
            )
            secrets_by_key = {}
            for name, rule in rules.items():
                key = call("/api/workspaces/team/api-keys", {"name": name})
                secrets_by_key[name] = key["secret_key"]
                if rule is not None:
                    unit, limit = rule
                    body = {"scope": "api_key", "subject": key["id"], "unit": unit, "limit": limit}
                    call("/api/rate-limits", body)
            return secrets_by_key
    finally:
        services.engine.dispose()


@dataclass
class Fleet:
    urls: list[str]
    pids: list[int]
    keys: dict[str, str]
    database_url: str
    simulator: str
    simulator_pid: int

    def most_streams_at_once(self) -> int:
        """Read where the streams run: the simulator counts them on one clock, and an upstream stream
        lies within its lease (admitted before it opens, released after it ends), so this is a lower
        bound of the leases held at once that, unlike the client's view, no scheduling delay inflates."""
        metrics = httpx.get(f"{self.simulator}/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("simulator_max_active_streams "))
        return int(line.split()[1])


@contextlib.contextmanager
def fleet(
    tmp: Path,
    redis_url: str,
    database_url: str,
    rules: Rules,
    *,
    gateways: int = 3,
    lease_s: float = 3.0,
    tokens_per_s: int = 20,
    environment: Mapping[str, str] | None = None,
) -> Iterator[Fleet]:
    """`gateways` processes sharing `redis_url` and `database_url`, in front of one simulator that
    decodes `tokens_per_s` tokens a second; `environment` adds or overrides their settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    settings = Settings(
        data_dir=tmp / "portal",
        database_url=database_url,
        pepper=secrets.token_hex(16),  # type: ignore[arg-type]
        admin_token=issue(USER_TOKEN_PREFIX).value,  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,  # the upstream is a simulator on this machine
    )
    sim_port = free_port()
    simulator = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--any-model"]
    simulator += ["--ttft-ms", "0", "--tokens-per-second", str(tokens_per_s), "--completion-tokens", "1000"]
    gateway_env = {
        **env,
        "MODELFLEET_DATABASE_URL": database_url,
        "MODELFLEET_DATA_DIR": str(tmp / "gateway"),
        "MODELFLEET_PEPPER": settings.pepper.get_secret_value(),
        "MODELFLEET_WORKER_ENABLED": "false",
        "MODELFLEET_REDIS_URL": redis_url,
        "MODELFLEET_GATEWAY_REDIS_PREFIX": "mffault",
        "MODELFLEET_GATEWAY_REPLICAS": str(gateways),
        "MODELFLEET_GATEWAY_LEASE_SECONDS": str(lease_s),
        "MODELFLEET_GATEWAY_REDIS_PROBE_SECONDS": "0.1",
        "MODELFLEET_USAGE_HEARTBEAT_SECONDS": "0.5",
        "MODELFLEET_USAGE_REAP_AFTER_SECONDS": "2",
        "MODELFLEET_GATEWAY_HEALTH_CHECK_SECONDS": "0",
        **(environment or {}),
    }
    with contextlib.ExitStack() as stack:
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim_pid = stack.enter_context(
            server(simulator, env, f"{sim_url}/health", "simulator", tmp / "sim.log")
        )
        keys = set_up(settings, sim_url, rules)
        urls, processes = [], []
        for n in range(gateways):  # started together: each takes a second or so to import and start
            port = free_port()
            command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
            log = stack.enter_context((tmp / f"gw{n}.log").open("wb"))
            process = subprocess.Popen(command, env=gateway_env, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(stop, process)
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_until_up(f"{url}/healthz", process, "gateway")
        yield Fleet(urls, [p.pid for p in processes], keys, database_url, sim_url, sim_pid)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def chat(max_tokens: int, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
