"""What the gateway serves: API keys, MaaS models with their upstream targets, rate-limit rules."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.db import Base, utcnow


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
    used_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # in the current quota period
    # Quota refresh cycle: day | week | month (UTC calendar periods); None: the quota never refreshes.
    quota_refresh: Mapped[str | None] = mapped_column(String(8), default=None)
    # Start of the period `used_tokens` counts (None: no period yet / lifetime quota). The gateway's
    # usage writer resets `used_tokens` when it charges a newer period.
    quota_period_start: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    # Bumped by every ORM change; the gateway polls max(updated_at) to see edits made by other processes.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    # The price of one unit where tokens are not the unit: an image, a second of audio transcribed, a
    # character spoken, a document reranked (gateway/units.py), on top of any token price.
    price_per_unit: Mapped[float] = mapped_column(Numeric(14, 6, asdecimal=False), default=0)
    # What the model serves (store.vocabulary.Capability); None: its plaza model's capabilities, and
    # without a plaza model no check. The gateway refuses what the model cannot serve before admission.
    capabilities: Mapped[list[str] | None] = mapped_column(default=None)
    image_sizes: Mapped[list[str] | None] = mapped_column(default=None)  # "1024x1024", …; None: any
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
    priority: Mapped[int] = mapped_column(default=0)  # lower tiers first; higher ones are fallbacks

    maas_model: Mapped[MaasModel] = relationship(back_populates="targets")


class RateLimitRule(Base):
    """One limit the gateway enforces on one bucket of traffic.

    Which requests a rule counts (see `applicable` for the exact selection the gateway uses):

    | scope     | subject           | model = X                       | model = null                       |
    |-----------|-------------------|---------------------------------|------------------------------------|
    | global    | (none)            | not allowed (use scope model)   | all traffic, one bucket            |
    | model     | (none)            | traffic to X                    | each model, its own bucket         |
    | workspace | workspace slug    | the workspace's traffic to X    | the workspace's traffic, all models|
    | api_key   | key public id     | the key's traffic to X          | the key's traffic, all models      |
    | api_key_model | key public id | the key's traffic to X          | the key's traffic, each model apart|

    `rps`/`rpm`/`tpm`/`tpd` are rates (GCRA: `limit` per period, bursts up to `burst`, default `limit`);
    `concurrency` caps requests in flight. Tokens count prompt + completion tokens. `upm`/`upd` count
    the units of models whose unit is not the token (images, seconds of audio, characters spoken,
    documents reranked: gateway/units.py).
    """

    __tablename__ = "rate_limit_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # global | model | workspace | api_key | api_key_model
    model: Mapped[str | None] = mapped_column(String(128), default=None)  # MaaS public id; None: all
    subject: Mapped[str | None] = mapped_column(String(128), default=None)  # workspace slug / key id
    unit: Mapped[str] = mapped_column(String(16))  # rps | rpm | tpm | tpd | upm | upd | concurrency
    limit: Mapped[int] = mapped_column(BigInteger)
    burst: Mapped[int | None] = mapped_column(BigInteger, default=None)  # None: same as limit
    enabled: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    # scope|model|subject|unit: one rule per bucket and unit, enforced by the database (NULLs in a
    # plain unique constraint would not collide, so the key spells them out).
    identity: Mapped[str] = mapped_column(String(300), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @staticmethod
    def identity_of(scope: str, model: str | None, subject: str | None, unit: str) -> str:
        return "|".join((scope, model or "*", subject or "*", unit))

    @property
    def period_seconds(self) -> int | None:
        """The GCRA period of a rate unit; None for `concurrency`, which is not a rate."""
        return PERIOD_SECONDS.get(self.unit)

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else self.limit

    def bucket(self, model: str) -> str:
        """The counter this rule charges for a request to `model` (stable across processes).

        `api_key_model` (a key's limit for each model separately) shares the `api_key` family's
        counters, like the gateway's limiter: the same key and model always land in one bucket."""
        per_model = self.scope in ("model", "api_key_model")
        parts = [self.unit, "api_key" if self.scope == "api_key_model" else self.scope]
        if self.subject is not None:
            parts.append(self.subject)
        if self.model is not None or per_model:
            parts.append(f"model={self.model or model}")
        return ":".join(parts)


PERIOD_SECONDS = {"rps": 1, "rpm": 60, "tpm": 60, "tpd": 86_400, "upm": 60, "upd": 86_400}


def applicable(
    rules: Iterable[RateLimitRule], *, workspace: str, api_key: str, model: str
) -> list[RateLimitRule]:
    """The enabled rules a request by `api_key` of `workspace` to `model` must pass, all of them.

    A `model`-scope rule naming the model replaces the per-model default (model = null) of the same
    unit, so ops can give one model a different limit; every other rule adds a bucket.
    """
    rules = list(rules)
    chosen: list[RateLimitRule] = []
    specific_model_units = {r.unit for r in rules if r.enabled and r.scope == "model" and r.model == model}
    # An `api_key` rule naming the model is the same bucket as the key's `api_key_model` rule: it wins.
    key_model_units = {
        r.unit
        for r in rules
        if r.enabled and r.scope == "api_key" and r.subject == api_key and r.model == model
    }
    for rule in rules:
        if not rule.enabled or rule.model not in (None, model):
            continue
        if rule.scope == "global":
            chosen.append(rule)
        elif rule.scope == "model":
            if rule.model is not None or rule.unit not in specific_model_units:
                chosen.append(rule)
        elif rule.scope == "api_key_model":
            if rule.subject == api_key and (rule.model is not None or rule.unit not in key_model_units):
                chosen.append(rule)
        elif (rule.scope == "workspace" and rule.subject == workspace) or (
            rule.scope == "api_key" and rule.subject == api_key
        ):
            chosen.append(rule)
    return chosen
