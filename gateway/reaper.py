"""The reaper: settles the requests of gateway replicas that died, exactly once.

A replica that stops beating (`gateway_replicas.seen_at` older than `dead_after_s`: killed, its node
lost, frozen) leaves its in-flight markers (gateway/inflight.py). Every gateway runs `reap` now and
then; in one transaction it takes the markers of the dead replicas (and of replicas no longer listed),
deletes them and their replicas' rows, and writes each as a usage row -- `error_type = 'interrupted'`,
`estimated = true`, the prompt estimated from the request and the completion the stream had relayed by
its last heartbeat -- charged to the key's and the workspace's quotas like any other row.

Exactly once: the markers are deleted in the transaction that writes their rows, so two reapers (or a
reaper and a writer that outlived its process) cannot both write them -- the second finds no marker
left -- and a row the dead replica had already written is kept as it was (`ON CONFLICT (request_id)
DO NOTHING`, and only rows really inserted are charged). On PostgreSQL a transaction-level advisory
lock lets one reaper run at a time; the others skip their round.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, or_, select, text

from gateway.metering import Prices, Usage, cost
from gateway.usage import CHARGES, write_rows
from store.db import utcnow
from store.models import GatewayReplica, UsageInflight

log = logging.getLogger("modelfleet.gateway")

REAPER_LOCK = 0x6D66_7265_6170  # "mfreap": one reaper at a time across the gateways
INTERRUPTED = "interrupted"


def reap(
    engine: Engine,
    *,
    dead_after_s: float,
    bill_prompt_without_output: bool = True,
    now: datetime | None = None,
) -> int:
    """Settle every in-flight request of the replicas dead at `now`; the usage rows written."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=dead_after_s)
    with engine.begin() as conn:
        postgresql = conn.dialect.name == "postgresql"
        if (
            postgresql
            and not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": REAPER_LOCK}).scalar()
        ):
            return 0
        query = select(GatewayReplica.id, GatewayReplica.seen_at).where(GatewayReplica.seen_at < cutoff)
        dead: dict[str, datetime] = {id_: seen for id_, seen in conn.execute(query).all()}
        # Markers of a dead replica, and old markers of a replica no longer listed. A recent marker
        # of an unlisted replica belongs to one that has not beaten yet: it is left alone.
        unlisted = UsageInflight.replica.not_in(select(GatewayReplica.id).scalar_subquery())
        whose = or_(UsageInflight.replica.in_(list(dead)), and_(unlisted, UsageInflight.at < cutoff))
        markers = (
            conn.execute(delete(UsageInflight).where(whose).returning(*UsageInflight.__table__.columns))
            .mappings()
            .all()
        )
        if dead:
            conn.execute(delete(GatewayReplica).where(GatewayReplica.id.in_(list(dead))))
        if not markers:
            return 0
        rows = [_interrupted(m, dead.get(m["replica"], cutoff), bill_prompt_without_output) for m in markers]
        written, _ = write_rows(conn, rows)
    log.warning(
        "gateway: settled %d requests of %d dead gateway replicas as interrupted (%d already recorded)",
        written,
        len(dead),
        len(rows) - written,
    )
    return written


def _interrupted(marker: Any, last_seen: datetime, bill_prompt_without_output: bool) -> dict[str, Any]:
    """The usage row of a request its replica never finished: what it is known to have served."""
    completion = int(marker["completion_tokens"])
    prompt = int(marker["prompt_tokens"]) if completion or bill_prompt_without_output else 0
    usage = Usage(prompt, completion, 0, 0, estimated=True)
    prices = Prices.of(
        marker["price_input_per_m"], marker["price_output_per_m"], marker["price_cached_per_m"]
    )
    at: datetime = marker["at"]
    seen = _utc(last_seen)
    return {
        "at": at,
        "request_id": marker["request_id"],
        "api_key": marker["api_key"],
        "workspace": marker["workspace"],
        "model": marker["model"],
        "endpoint": marker["endpoint"],
        "target": None,
        "region": None,
        "status": 200 if completion else 502,  # tokens relayed: the client had its 200 and a part
        "error_type": INTERRUPTED,
        "stream": marker["stream"],
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "modality": "text",  # the marker keeps tokens only: a reaped request is billed by its tokens
        "units": 0,
        "estimated": True,
        "ttft_ms": None,
        "latency_ms": max(0.0, round((seen - _utc(at)).total_seconds() * 1000, 3)),
        "price_input_per_m": prices.input_per_million,
        "price_output_per_m": prices.output_per_million,
        "price_cached_per_m": marker["price_cached_per_m"],
        "price_per_unit": 0,
        "cost": cost(usage, prices),
        CHARGES: (("api_key", marker["api_key"], None), ("workspace", marker["workspace"], None)),
    }


def _utc(at: datetime) -> datetime:
    """SQLite hands back naive UTC times, PostgreSQL aware ones."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
