"""API keys as the gateway sees them: the one function that turns a presented `sk-…` into a key row.

The public id part finds the row; the secret part is compared as HMAC-SHA256(pepper, secret) in
constant time. An unknown public id still costs one HMAC and one comparison, so response times do
not tell an attacker which public ids exist.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.db import utcnow
from portal.models import ApiKey, Workspace
from portal.security import API_KEY_PREFIX, SECRET_LEN, Hasher, IssuedSecret, issue, split

_UNKNOWN_DIGEST = "0" * 64  # compared against when no row matches, to spend the same time


def aware(value: datetime) -> datetime:
    """`value` in UTC. Naive times are UTC: SQLite hands stored times back without an offset, and
    it stores an aware time's wall clock without converting it, so times are normalised before saving."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def utc_field(value: datetime | None) -> datetime | None:
    """For request models (`AfterValidator`): a time given with any offset, as UTC; a time that
    falls outside what Python can represent once converted is a validation error, not a crash."""
    if value is None:
        return None
    try:
        return aware(value)
    except OverflowError as exc:
        raise ValueError("out of range") from exc


def is_expired(key: ApiKey, now: datetime | None = None) -> bool:
    return key.expires_at is not None and aware(key.expires_at) <= (now or utcnow())


def status(key: ApiKey, now: datetime | None = None) -> str:
    """What a key can do right now: active, disabled, expired, or exhausted (quota used up)."""
    if not key.enabled:
        return "disabled"
    if is_expired(key, now):
        return "expired"
    if key.token_quota is not None and key.used_tokens >= key.token_quota:
        return "exhausted"
    return "active"


def verify_api_key(session: Session, hasher: Hasher, presented: str) -> ApiKey | None:
    """The enabled, unexpired key whose full value is `presented`, or None.

    Quota is not checked here: a key with no tokens left is still *this* key, and the gateway answers
    it with an insufficient-quota error rather than an authentication error.
    """
    parts = split(presented.strip(), API_KEY_PREFIX)
    public_id, secret = parts if parts is not None else ("", "x" * SECRET_LEN)
    row = session.scalar(select(ApiKey).where(ApiKey.public_id == public_id)) if parts else None
    digest = hasher.digest(secret)
    stored = row.secret_hash if row is not None else _UNKNOWN_DIGEST
    if not hmac.compare_digest(digest, stored) or row is None:
        return None
    if not row.enabled or is_expired(row):
        return None
    return row


def mint_api_key(
    session: Session,
    hasher: Hasher,
    workspace: Workspace,
    *,
    name: str,
    created_by: str,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    token_quota: int | None = None,
) -> tuple[ApiKey, IssuedSecret]:
    """A new enabled key (added and flushed) and its secret: the caller shows `secret.value` once and
    audits the creation; only the peppered HMAC of the secret is stored."""
    secret = issue(API_KEY_PREFIX)
    key = ApiKey(
        public_id=secret.public_id,
        secret_hash=hasher.digest(secret.secret),
        last4=secret.secret[-4:],
        workspace_id=workspace.id,
        name=name,
        created_by=created_by,
        expires_at=expires_at,
        enabled=True,
        allowed_models=allowed_models,
        token_quota=token_quota,
        used_tokens=0,
    )
    session.add(key)
    session.flush()
    return key, secret
