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

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

# Importing it registers the gateway's families, even before its first request.
from gateway.metrics import exposition

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
def metrics(request: Request) -> Response:
    return exposition(request.headers.get("accept"))
