"""The data plane's settings (prefix `MODELFLEET_`): the shared ones and the gateway's own.

`python -m gateway` reads only these; the portal's settings extend them, since `python -m portal`
serves the gateway in process under `/v1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from store.settings import StoreSettings


class GatewaySettings(StoreSettings):
    demo: bool = Field(default=False, description="load the demo stack, seed catalog, workspace and user")

    # Gateway (the OpenAI-compatible data plane, gateway; docs/gateway/api.md).
    redis_url: str | None = Field(
        default=None, description="Redis for limits and quotas shared by replicas; unset: in process"
    )
    gateway_redis_prefix: str = Field(default="mf", description="key prefix in Redis ({mf} for Cluster)")
    gateway_on_redis_failure_requests: Literal["fail_closed", "local", "fail_open"] = "local"
    gateway_on_redis_failure_tokens: Literal["fail_closed", "local", "fail_open"] = Field(
        default="fail_closed", description="token limits and quotas; fail_closed answers 503"
    )
    gateway_on_redis_failure_concurrency: Literal["fail_closed", "local", "fail_open"] = "local"
    gateway_lease_seconds: float = Field(
        default=15.0,
        ge=1,
        description="lifetime of a concurrency lease in Redis; renewed every third of it while the "
        "request runs, so a dead replica's leases free within it",
    )
    gateway_redis_probe_seconds: float = Field(
        default=0.25, gt=0, description="how often a Redis that failed is asked whether it answers again"
    )
    gateway_replicas: int = Field(
        default=1, ge=1, description="gateway processes sharing the load (the `local` fallback enforces 1/N)"
    )
    gateway_region: str | None = Field(
        default=None, description="this gateway's region: locality routing prefers targets there"
    )
    gateway_default_max_tokens: int = Field(
        default=1024, ge=1, description="tokens reserved for the output when a request sets no max_tokens"
    )
    gateway_max_attempts: int = Field(default=3, ge=1, description="upstream tries per request (failover)")
    gateway_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    gateway_read_timeout_seconds: float = Field(
        default=300.0, gt=0, description="longest silence from an upstream (first token included)"
    )
    gateway_max_connections: int = Field(default=1000, ge=1, description="upstream connection pool size")
    gateway_bill_prompt_without_output: bool = Field(
        default=True, description="bill the prompt of a stream cut before its first token"
    )
    gateway_snapshot_poll_seconds: float = Field(
        default=1.0, gt=0, description="how often to look for key/model/limit edits by other processes"
    )
    gateway_feed: bool = Field(
        default=True,
        description="follow the change feed (PostgreSQL LISTEN): reload at once when routable state changes",
    )
    gateway_health_check_seconds: float = Field(
        default=5.0, ge=0, description="how often each ready serving endpoint's health path is asked (0: off)"
    )
    gateway_health_check_timeout_seconds: float = Field(
        default=2.0, gt=0, description="how long a health check may take before it counts as a failure"
    )
    gateway_snapshot_reload_seconds: float = Field(
        default=30.0, gt=0, description="full reload of keys, models and limits (safety net)"
    )
    gateway_simulate_servings: bool | None = Field(
        default=None,
        description="answer serving targets with the in-process engine SIMULATOR instead of their "
        "in-cluster endpoints; default: on with --demo",
    )
    usage_inflight: bool | None = Field(
        default=None,
        description="record each admitted request in the database before its upstream call, so a "
        "gateway that dies mid-request is billed by the reaper; default: on with PostgreSQL",
    )
    usage_heartbeat_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often a gateway tells the database it is alive, with its streams' progress",
    )
    usage_reap_after_seconds: float = Field(
        default=15.0, gt=0, description="a gateway silent this long is dead: the reaper settles its requests"
    )
    usage_inflight_wait_seconds: float = Field(
        default=1.0, gt=0, description="longest a request waits for its in-flight marker before going on"
    )
    usage_batch_size: int = Field(default=500, ge=1, description="usage rows per database write")
    usage_flush_seconds: float = Field(default=0.5, gt=0, description="longest wait before rows are written")
    # Where MaaS targets' secret references may point (gateway/secrets.py): never the server's own settings.
    maas_secret_env_prefix: str = Field(
        default="MAAS_SECRET_",
        min_length=1,
        description="env:NAME references resolve only for NAME with this prefix (never MODELFLEET_*)",
    )
    maas_secrets_dir: Path | None = Field(
        default=None, description="file:PATH references resolve only inside this directory; unset: none do"
    )
    gateway_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="largest request body /v1 accepts; larger: 413"
    )
    compare_max_models: int = Field(default=3, ge=1, le=10, description="models per /v1/compare request")
