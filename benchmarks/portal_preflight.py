"""Preflight + preview of one serving request on a stack of 1,000 servings (target: p95 < 100 ms).

A synthetic stack (`benchmarks.synthetic`) is committed into a temporary stacks repository; the
snapshot's index is built once (as the portal does once per commit), then ~200 varied requests —
scale an existing serving, change its flags or model, move it, add a new one — each go through
`portal.preflight.run` and `portal.preview.preview_change`. The model-store check is measured
separately against moto's S3 server in-process. For comparison, the full path
(`fleet.rules.preflight`, which rebuilds the whole stack) runs on a few of the same requests.

    python -m benchmarks.portal_preflight
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml

from benchmarks.report import bench
from benchmarks.synthetic import MODELS, synthetic_stack
from fleet.errors import IssuesError
from fleet.rules import preflight as full_preflight
from portal import preflight
from portal.app import build_services
from portal.preview import preview_change
from portal.repository import StackRepository, StackSnapshot, serving_yaml
from portal.services import Services
from portal.settings import S3Credentials, Settings
from store.security import USER_TOKEN_PREFIX, issue

SERVINGS = 1_000
REQUESTS = 200
STACK = "bench"
POLICY = {"workspace-devices": {"maxDevices": {"*": 64}}, "public-model-replicas": {"minReplicas": 1}}


def _commit_stack(repo: StackRepository, config: dict[str, Any], servings: list[tuple[str, Any]]) -> None:
    stacks = repo.stacks_dir
    (stacks / STACK / "servings").mkdir(parents=True, exist_ok=True)
    sections = {f"modelfleet:{key}": value for key, value in config.items()}
    (stacks / f"Pulumi.{STACK}.yaml").write_text(
        yaml.safe_dump({"config": sections}, sort_keys=False), "utf-8"
    )
    (stacks / STACK / "policy.json").write_text(json.dumps(POLICY), "utf-8")
    for _, raw in servings:
        (stacks / STACK / "servings" / f"{raw['name']}.yaml").write_text(serving_yaml(raw), "utf-8")
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "bench stack")


def requests(snapshot: StackSnapshot, count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Varied serving requests against the committed stack: mostly sound, a few refused."""
    rnd = random.Random(seed)
    servings = list(snapshot.fleet.servings)
    pools = list(snapshot.fleet.pools.values())
    out: list[dict[str, Any]] = []
    for i in range(count):
        raw = rnd.choice(servings).model_dump(mode="json", exclude_none=True)
        kind = rnd.choice(["scale", "scale", "flags", "model", "move", "new", "new"])
        if kind == "scale":
            raw["placements"][0]["replicas"] = rnd.randint(0, 4)
        elif kind == "flags":
            raw["extra_args"] = rnd.choice([["--max-num-seqs", "32"], ["--no-such-flag"], []])
        elif kind == "model":
            raw["model"] = rnd.choice(MODELS)
        elif kind == "move" or kind == "new":
            pool = rnd.choice(pools)
            raw["placements"] = [
                {"region": pool.spec.region, "pool": pool.name, "replicas": rnd.randint(1, 2)}
            ]
            if kind == "new":
                raw["name"] = f"bench-new-{i}"
                raw["public_model_name"] = rnd.choice(MODELS)
        out.append(raw)
    return out


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def timed(fn: Callable[[dict[str, Any]], object], items: list[dict[str, Any]]) -> list[float]:
    times: list[float] = []
    gc.collect()
    for raw in items:
        start = time.perf_counter()
        fn(raw)
        times.append(time.perf_counter() - start)
    return times


def _preview(snapshot: StackSnapshot, raw: dict[str, Any]) -> None:
    # A refused request has no diff; what it costs to say so still counts.
    with contextlib.suppress(IssuesError):
        preview_change(snapshot, raw["name"], raw)


def _over_http(services: Services, items: list[dict[str, Any]]) -> list[float]:
    """Both endpoints through the app (auth, validation, JSON), as the deploy form calls them."""
    from fastapi.testclient import TestClient

    from portal.app import create_app

    token = services.settings.admin_token
    assert token is not None
    times: list[float] = []
    with TestClient(create_app(services=services)) as client:
        client.headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        for ws in sorted({raw["workspace"] for raw in items}):
            client.post("/api/workspaces", json={"slug": ws, "name": ws})
        gc.collect()
        for raw in items:
            body = {k: v for k, v in raw.items() if k != "workspace"}
            start = time.perf_counter()
            for action in ("preflight", "preview"):
                answer = client.post(f"/api/workspaces/{raw['workspace']}/servings:{action}", json=body)
                assert answer.status_code in (200, 422), answer.text
            times.append(time.perf_counter() - start)
    return times


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _with_moto(root: Path, config: dict[str, Any], servings: list[tuple[str, Any]]) -> list[float]:
    """The same requests with the model-store check on, against moto's S3 server."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3", endpoint_url=url, aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        s3.create_bucket(Bucket="models")
        for model in MODELS:
            for name in ("config.json", "tokenizer.json", "model-00001-of-00001.safetensors"):
                s3.put_object(Bucket="models", Key=f"{model}/{name}", Body=b"x" * 64)
        for region in config["regions"]:
            region["model_store"]["endpoint"] = url
        services = _services(root / "s3", config, servings, s3_keys=True)
        snapshot = services.repository.snapshot(STACK)
        _ = snapshot.index
        items = requests(snapshot, REQUESTS // 2, seed=11)
        return timed(lambda raw: preflight.run(services, snapshot, raw), items)
    finally:
        server.stop()


def _services(
    root: Path, config: dict[str, Any], servings: list[tuple[str, Any]], s3_keys: bool = False
) -> Services:
    settings = Settings(
        data_dir=root,
        admin_token=issue(USER_TOKEN_PREFIX).value,  # type: ignore[arg-type]
        pepper="bench",  # type: ignore[arg-type]
        worker_enabled=False,
        s3_credentials={"model-store": S3Credentials(access_key_id="k", secret_access_key="s")}  # type: ignore[arg-type]
        if s3_keys
        else {},
    )
    services = build_services(settings)
    _commit_stack(services.repository, config, servings)
    return services


def main() -> None:
    config, servings = synthetic_stack(SERVINGS)
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as tmp:
        root = Path(tmp)
        services = _services(root / "portal", config, servings)
        start = time.perf_counter()
        snapshot = services.repository.snapshot(STACK)
        _ = snapshot.index
        bench("portal_snapshot_index_1k", time.perf_counter() - start, "s")

        items = requests(snapshot, REQUESTS)
        timed(lambda raw: preflight.run(services, snapshot, raw, model_store=False), items[:20])  # warm
        check = timed(lambda raw: preflight.run(services, snapshot, raw, model_store=False), items)
        diff = timed(lambda raw: _preview(snapshot, raw), items)
        both = [a + b for a, b in zip(check, diff, strict=True)]
        bench("portal_preflight_p50_1k", _percentile(check, 50) * 1e3, "ms")
        bench("portal_preflight_p95_1k", _percentile(check, 95) * 1e3, "ms")
        bench("portal_preview_p95_1k", _percentile(diff, 95) * 1e3, "ms")
        bench("portal_preflight_preview_p50_1k", _percentile(both, 50) * 1e3, "ms")
        bench("portal_preflight_preview_p95_1k", _percentile(both, 95) * 1e3, "ms")
        api = _over_http(services, items)
        bench("portal_preflight_preview_http_p50_1k", _percentile(api, 50) * 1e3, "ms")
        bench("portal_preflight_preview_http_p95_1k", _percentile(api, 95) * 1e3, "ms")

        sample = items[:: REQUESTS // 5][:5]
        # Best of three per request: the full path takes long enough for a busy machine to skew it.
        full = [
            min(timed(lambda raw: full_preflight(snapshot.fleet, raw, snapshot.policy_config), [raw] * 3))
            for raw in sample
        ]
        fast = [
            min(timed(lambda raw: preflight.run(services, snapshot, raw, model_store=False), [raw] * 3))
            for raw in sample
        ]
        bench("core_full_preflight_p50_1k", statistics.median(full) * 1e3, "ms")
        bench("portal_preflight_same_requests_p50_1k", statistics.median(fast) * 1e3, "ms")
        bench("full_over_incremental_preflight_1k", statistics.median(full) / statistics.median(fast), "x")
        services.engine.dispose()

        s3 = _with_moto(root, config, servings)
        bench("portal_preflight_with_s3_moto_p95_1k", _percentile(s3, 95) * 1e3, "ms")


if __name__ == "__main__":
    main()
