"""The gateway's added latency and CPU per request for embeddings, rerank and image generation, beside
chat's, each with its direct baseline (the simulator called without the gateway), in about 40 s.

`python -m benchmarks.gateway_modalities` prints `BENCH <name> <value> <unit>` lines:

- `modality_<endpoint>_direct_sequential_p50` / `modality_<endpoint>_gateway_sequential_p50` and
  `modality_<endpoint>_added_sequential_p50`: one request at a time;
- `modality_<endpoint>_added_p50_<rate>rps`, `..._p99_...`: open loop at a constant rate (see
  benchmarks/gateway_latency.py for the generator), the gateway's percentile minus the direct one;
- `modality_<endpoint>_cpu_per_request_<rate>rps`: the gateway process's CPU time per request.

The gateway runs as one process (`python -m gateway`) with limits on (a `upm` rule on the image and
rerank models, `rpm`/`tpm` on every model, in Redis when one answers), capabilities checked, and usage
rows written to PostgreSQL (or SQLite). Images are 64x64 PNGs so the simulator's work stays small.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.gateway_latency import (
    HIGH,
    Pool,
    _admin_token,
    cpu_seconds,
    database,
    gateway_env,
    info,
    open_loop,
    redis_url,
    request_bytes,
    sequential,
)
from benchmarks.processes import free_port, server
from benchmarks.report import bench

ROOT = Path(__file__).resolve().parent.parent
RATE = int(os.environ.get("MODELFLEET_BENCH_MODALITY_RATE", "100"))
SECONDS = float(os.environ.get("MODELFLEET_BENCH_MODALITY_SECONDS", "3"))
SEQUENTIAL = 150

# endpoint → (path, model, capabilities, body)
CASES: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        "m-chat",
        ["text-generation"],
        {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 4},
    ),
    "embeddings": ("/v1/embeddings", "m-emb", ["embedding"], {"input": ["a short text", "another one"]}),
    "rerank": (
        "/v1/rerank",
        "m-rerank",
        ["rerank"],
        {"query": "big cat", "documents": ["a dog", "the big cat", "a bird", "cats"]},
    ),
    "images": (
        "/v1/images/generations",
        "m-image",
        ["image-generation"],
        {"prompt": "a fox", "size": "64x64"},
    ),
}


def set_up(database_url: str, tmp: Path, pepper: str, admin_token: str, engine_url: str) -> str:
    """One model per endpoint, limits that never refuse (but run), a key; the key's secret."""
    from fastapi.testclient import TestClient

    from portal.app import build_services, create_app
    from portal.settings import Settings

    settings = Settings(
        data_dir=tmp / "portal",
        database_url=database_url,
        pepper=pepper,  # type: ignore[arg-type]
        admin_token=admin_token,  # type: ignore[arg-type]
        worker_enabled=False,
        allow_private_urls=True,
    )
    services = build_services(settings)
    try:
        with TestClient(create_app(services=services)) as portal:
            portal.headers["authorization"] = f"Bearer {admin_token}"

            def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
                response = portal.post(path, json=body)
                assert response.status_code in (200, 201), response.text
                out: dict[str, Any] = response.json()
                return out

            call("/api/workspaces", {"slug": "bench", "name": "Bench"})
            for _, model, capabilities, _ in CASES.values():
                target = {"kind": "external", "base_url": f"{engine_url}/v1", "upstream_model": model}
                body = {
                    "public_id": model,
                    "targets": [target],
                    "enabled": True,
                    "visibility": "all",
                    "price_input_per_m": 1.0,
                    "price_per_unit": 0.01,
                    "capabilities": capabilities,
                }
                call("/api/maas-models", body)
            key = call("/api/workspaces/bench/api-keys", {"name": "bench"})
            rules = [
                {"scope": "model", "unit": "rpm", "limit": HIGH},
                {"scope": "workspace", "subject": "bench", "unit": "tpm", "limit": HIGH},
                {"scope": "model", "model": "m-image", "unit": "upm", "limit": HIGH},
                {"scope": "model", "model": "m-rerank", "unit": "upm", "limit": HIGH},
            ]
            for rule in rules:
                call("/api/rate-limits", rule)
            secret: str = key["secret_key"]
            return secret
    finally:
        services.engine.dispose()


async def measure(sim_port: int, gw_port: int, key: str, gateway_pid: int) -> None:
    for name, (path, model, _, body) in CASES.items():
        payload = {"model": model, **body}
        requests = {
            "direct": request_bytes(sim_port, path, payload, None),
            "gateway": request_bytes(gw_port, path, payload, key),
        }
        pools = {"direct": Pool(sim_port), "gateway": Pool(gw_port)}
        for side, pool in pools.items():
            warm = await open_loop(pool, requests[side], 50, 0.5)
            if warm.errors:
                raise RuntimeError(f"{name} {side}: {warm.statuses} while warming up")
        p50 = {}
        for side, pool in pools.items():
            times = await sequential(pool, requests[side], SEQUENTIAL)
            p50[side] = times[len(times) // 2]
            bench(f"modality_{name}_{side}_sequential_p50", p50[side], "ms")
        bench(f"modality_{name}_added_sequential_p50", p50["gateway"] - p50["direct"], "ms")
        runs = {}
        for side, pool in pools.items():
            before = cpu_seconds(gateway_pid)
            runs[side] = run = await open_loop(pool, requests[side], RATE, SECONDS)
            if run.errors:
                info(f"{name} {side} at {RATE} req/s: errors {run.statuses}")
            if side == "gateway":
                cpu = cpu_seconds(gateway_pid) - before
                bench(
                    f"modality_{name}_cpu_per_request_{RATE}rps",
                    cpu / max(len(run.latencies_ms), 1) * 1000,
                    "ms",
                )
        for q in (50, 99):
            bench(f"modality_{name}_added_p{q}_{RATE}rps", runs["gateway"].p(q) - runs["direct"].p(q), "ms")
        for pool in pools.values():
            pool.close()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="modelfleet-bench-mm-"))
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim_port, gw_port = free_port(), free_port()
    sim_cmd = [sys.executable, "-m", "simulator.app", "--port", str(sim_port), "--ttft-ms", "0"]
    sim_cmd += ["--completion-tokens", "4", "--any-model"]
    try:
        with (
            database(tmp) as (database_url, db_kind),
            server(sim_cmd, base_env, f"http://127.0.0.1:{sim_port}/health", "simulator", tmp / "sim.log"),
        ):
            pepper, admin_token = secrets.token_hex(16), _admin_token()
            key = set_up(database_url, tmp, pepper, admin_token, f"http://127.0.0.1:{sim_port}")
            redis = redis_url()
            env = gateway_env(base_env, database_url, tmp, pepper, admin_token, redis)
            info(f"modalities: limits {'in Redis' if redis else 'in process'}, usage rows to {db_kind}")
            gw_cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(gw_port)]
            with server(gw_cmd, env, f"http://127.0.0.1:{gw_port}/healthz", "gateway", tmp / "gw.log") as pid:
                asyncio.run(measure(sim_port, gw_port, key, pid))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
