"""What the gateway served: one row per request, and the hourly / daily rollups statistics read."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base

COST = Numeric(20, 9)  # cost in the price's currency, exact (Decimal), 1e-9 resolution


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_workspace_at", "workspace", "at"),
        Index("ix_usage_records_api_key_at", "api_key", "at"),
        Index("ix_usage_records_model_at", "model", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)  # when the request arrived (UTC)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)  # idempotent batch writes
    api_key: Mapped[str] = mapped_column(String(16))  # public id
    workspace: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(String(128))  # MaaS public id
    endpoint: Mapped[str] = mapped_column(String(32))  # chat.completions | completions | embeddings
    target: Mapped[str | None] = mapped_column(String(255))  # upstream identity, None if none was reached
    region: Mapped[str | None] = mapped_column(String(63))
    status: Mapped[int] = mapped_column(Integer)  # HTTP status sent to the client
    error_type: Mapped[str | None] = mapped_column(String(32))
    stream: Mapped[bool]
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # What was served and its units where tokens are not the unit (gateway/units.py): text (0 units),
    # embedding (0), image (images), transcription (seconds), speech (characters), rerank (documents).
    modality: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    estimated: Mapped[bool] = mapped_column(default=False)  # tokens counted by us, not the engine
    ttft_ms: Mapped[float | None]
    latency_ms: Mapped[float]
    price_input_per_m: Mapped[Decimal] = mapped_column(COST)  # the prices in force, snapshotted
    price_output_per_m: Mapped[Decimal] = mapped_column(COST)
    price_cached_per_m: Mapped[Decimal] = mapped_column(COST)
    price_per_unit: Mapped[Decimal] = mapped_column(COST, default=Decimal(0), server_default="0")
    cost: Mapped[Decimal] = mapped_column(COST)


class UsageRollup(Base):
    """Sums per period bucket (hour or day) × workspace × API key × model, kept by `portal.usage.rollup`.

    Cost is summed as an integer number of nano-units (1e-9 of the price's currency): SQLite has no
    decimal type (a `Numeric` column is a float there), integers add exactly on every backend.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint("period", "bucket", "workspace", "api_key", "model"),
        Index("ix_usage_rollups_workspace_period_bucket", "workspace", "period", "bucket"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    period: Mapped[str] = mapped_column(String(8))  # hour | day
    bucket: Mapped[datetime] = mapped_column(index=True)  # start of the hour / day (UTC)
    workspace: Mapped[str] = mapped_column(String(63))
    api_key: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # status >= 400
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    units: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # modality units
    estimated_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)  # exact: cost × 10^9
    latency_ms_sum: Mapped[float] = mapped_column(default=0.0)
    ttft_ms_sum: Mapped[float] = mapped_column(default=0.0)
    ttft_requests: Mapped[int] = mapped_column(BigInteger, default=0)  # requests with a ttft (the mean's n)


class UsageRollupState(Base):
    """How far the rollups have read `usage_records`: every row with `id <= last_id` is in them, no
    row above it is. Advanced in the same transaction as the sums, so a rerun never counts twice."""

    __tablename__ = "usage_rollup_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(default=None)


class UsageInflight(Base):
    """A request a gateway admitted and has not recorded yet: written before the upstream call,
    deleted in the transaction that writes its usage row. A row whose replica stopped beating is
    settled by the reaper (gateway/reaper.py) as an interrupted request with estimated tokens."""

    __tablename__ = "usage_inflight"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    replica: Mapped[str] = mapped_column(String(64), index=True)  # GatewayReplica.id
    at: Mapped[datetime]
    api_key: Mapped[str] = mapped_column(String(16))
    workspace: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(String(32))
    stream: Mapped[bool]
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # estimated from the request
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # relayed so far (heartbeat)
    price_input_per_m: Mapped[Decimal] = mapped_column(COST)
    price_output_per_m: Mapped[Decimal] = mapped_column(COST)
    price_cached_per_m: Mapped[Decimal] = mapped_column(COST)


class GatewayReplica(Base):
    """A running gateway process and its heartbeat; the reaper settles the in-flight requests of one
    that stopped beating."""

    __tablename__ = "gateway_replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime] = mapped_column(index=True)
