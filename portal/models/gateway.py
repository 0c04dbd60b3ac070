"""What the gateway serves: API keys, MaaS models with their upstream targets, rate-limit rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db import Base, utcnow


class ApiKey(Base):
    """`sk-<public_id><secret>`: the public id finds the row, the secret's HMAC proves it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    last4: Mapped[str] = mapped_column(String(4))
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(default=None)  # None: every visible model
    token_quota: Mapped[int | None] = mapped_column(BigInteger, default=None)  # None: unlimited
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class MaasModel(Base):
    __tablename__ = "maas_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(128), unique=True)  # the `model` clients send
    plaza_model_id: Mapped[str | None] = mapped_column(
        ForeignKey("plaza_models.id", ondelete="SET NULL"), default=None
    )
    strategy: Mapped[str] = mapped_column(String(24), default="round_robin")
    enabled: Mapped[bool] = mapped_column(default=False)
    visibility: Mapped[str] = mapped_column(String(16), default="all")  # all | specified
    visible_workspaces: Mapped[list[str]] = mapped_column(default=list)  # workspace slugs
    price_input_per_m: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    price_output_per_m: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    price_cached_per_m: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    targets: Mapped[list[MaasTarget]] = relationship(
        back_populates="maas_model", cascade="all, delete-orphan", lazy="selectin", order_by="MaasTarget.id"
    )


class MaasTarget(Base):
    """One upstream: a serving of a stack in a region, or an external OpenAI-compatible API."""

    __tablename__ = "maas_targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    maas_model_id: Mapped[int] = mapped_column(ForeignKey("maas_models.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # serving | external
    stack: Mapped[str | None] = mapped_column(String(63), default=None)
    serving: Mapped[str | None] = mapped_column(String(63), default=None)
    region: Mapped[str | None] = mapped_column(String(63), default=None)
    base_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    upstream_model: Mapped[str | None] = mapped_column(String(200), default=None)
    secret_ref: Mapped[str | None] = mapped_column(String(200), default=None)  # env:NAME / file:/path
    weight: Mapped[int] = mapped_column(default=100)

    maas_model: Mapped[MaasModel] = relationship(back_populates="targets")


class RateLimitRule(Base):
    __tablename__ = "rate_limit_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # global | model | workspace | api_key
    model: Mapped[str | None] = mapped_column(String(128), default=None)  # MaaS public id; None: all
    subject: Mapped[str | None] = mapped_column(String(128), default=None)  # workspace slug / key id
    unit: Mapped[str] = mapped_column(String(16))  # rps | rpm | tpm | concurrency
    limit: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
