"""Prometheus exposition: `GET /metrics` on the portal and on the stand-alone gateway.

The gateway's metrics (`gateway.metrics`: requests, latency, time to first token, tokens,
limit refusals, upstream attempts, usage queue) live in prometheus-client's default registry, so the
portal (which serves the gateway under `/v1` in the same process) and `python -m gateway` expose
the same families. The format follows the scraper's `Accept` header (Prometheus text, or OpenMetrics).
With several worker processes per pod (`--workers N`), set `PROMETHEUS_MULTIPROC_DIR` to aggregate them.

Unauthenticated, like every Prometheus target: the labels hold public model ids, endpoints, statuses and
target names, never an API key or a workspace (per-key figures are in the usage API, behind sign-in).
Keep the port off the internet or scrape through your ingress' allow-list.
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import gateway.metrics  # noqa: F401 (registers the gateway's families, even before its first request)

router = APIRouter(tags=["metrics"])


def registry() -> CollectorRegistry:
    """The default registry, or a merge of every worker's files in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


def exposition(accept: str | None) -> Response:
    encode, content_type = choose_encoder(accept or "")
    return Response(encode(registry()), headers={"content-type": content_type})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
def metrics(request: Request) -> Response:
    return exposition(request.headers.get("accept"))


async def metrics_endpoint(request: Request) -> Response:
    return exposition(request.headers.get("accept"))


async def healthz_endpoint(request: Request) -> Response:
    """Liveness and readiness of a gateway process: it answers. Deliberately not a database check: the
    gateway keeps serving from its snapshot of keys and models while the database blinks."""
    return JSONResponse({"status": "ok"})


def ops_routes() -> list[BaseRoute]:
    """`/metrics` and `/healthz` for the stand-alone gateway app (the Kubernetes probes and scrapes)."""
    return [
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/healthz", healthz_endpoint, methods=["GET"]),
    ]
