"""Prometheus metrics of the gateway (prometheus-client, default registry).

Defined here, once per process, so the portal's `/metrics` endpoint (another module) can expose them with
`prometheus_client.generate_latest()` and the gateway app only has to call the small helpers below.
Label values stay low-cardinality on purpose: the public model id and a status class, never the API key
(keys are unbounded; per-key figures come from the usage rows and their rollups).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

#: Buckets in seconds, from sub-millisecond (embeddings, cached answers) to long generations.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "modelfleet_gateway_requests_total",
    "Gateway requests answered, by public model, endpoint and HTTP status.",
    ["model", "endpoint", "status"],
)
LATENCY = Histogram(
    "modelfleet_gateway_request_duration_seconds",
    "Time from the request's arrival to its last byte (streams: the end of the stream).",
    ["model", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "modelfleet_gateway_time_to_first_token_seconds",
    "Time from the request's arrival to the first generated token (streamed requests).",
    ["model"],
    buckets=TTFT_BUCKETS,
)
TOKENS = Counter(
    "modelfleet_gateway_tokens_total",
    "Tokens billed, by public model and kind (prompt, completion, cached, reasoning).",
    ["model", "kind"],
)
UNITS = Counter(
    "modelfleet_gateway_units_total",
    "Units billed where tokens are not the unit, by public model and modality (image: images, "
    "transcription: seconds, speech: characters, rerank: documents).",
    ["model", "modality"],
)
LIMIT_REFUSALS = Counter(
    "modelfleet_gateway_limit_refusals_total",
    "Requests refused by a rate limit or quota, by scope and unit of the binding rule.",
    ["scope", "unit"],
)
UPSTREAM_ATTEMPTS = Counter(
    "modelfleet_gateway_upstream_attempts_total",
    "Upstream attempts, by target and outcome (ok, failure, transport_error).",
    ["target", "outcome"],
)
IN_FLIGHT = Gauge(
    "modelfleet_gateway_in_flight_requests",
    "Requests currently being served by this gateway process.",
)
USAGE_QUEUE = Gauge(
    "modelfleet_gateway_usage_queue_length",
    "Usage rows waiting for the batch writer.",
)
USAGE_WRITE_FAILURES = Counter(
    "modelfleet_gateway_usage_write_failures_total",
    "Usage batches the writer could not commit (they are retried).",
)


_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)` (in the order of its label names), remembered: `labels()` validates
    its arguments and takes a lock on every call, five times a request. As many entries as the
    metric's own children, which the label values keep few on purpose (see above)."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def observe_request(model: str, endpoint: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    child(REQUESTS, model, endpoint, str(status)).inc()
    child(LATENCY, model, endpoint).observe(seconds)


def observe_tokens(model: str, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> None:
    """Count the tokens billed for one request."""
    for kind, n in (
        ("prompt", prompt),
        ("completion", completion),
        ("cached", cached),
        ("reasoning", reasoning),
    ):
        if n:
            child(TOKENS, model, kind).inc(n)


def observe_refusal(scope: str, unit: str) -> None:
    """Count one request refused by a limit (`scope`/`unit` of the binding rule, or `quota`)."""
    LIMIT_REFUSALS.labels(scope=scope, unit=unit).inc()


# -- exposition (the portal's `/metrics` and the stand-alone gateway's) ---------------------------------
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
