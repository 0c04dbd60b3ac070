"""API keys as the control plane manages them: minting, status, what a key's quota stands at, and the
recount of a key's or a workspace's quota when its refresh cycle changes. (The one check of a presented
`sk-…` is the gateway's: `gateway.access.authenticate`.)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from portal.usage.totals import key_tokens, workspace_tokens
from store.db import utcnow
from store.models import ApiKey, Workspace
from store.periods import QuotaRefresh, aware, period_bounds
from store.security import API_KEY_PREFIX, Hasher, IssuedSecret, issue

_UNKNOWN_DIGEST = "0" * 64  # compared against when no row matches, to spend the same time


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


def used_in_period(key: ApiKey, now: datetime | None = None) -> int:
    """Tokens the key has used against its quota now, counted as the gateway counts them.

    `used_tokens` belongs to the period starting at `quota_period_start`; the gateway's usage writer
    restarts it at the first charge of a newer period. Until that charge, a key whose period rolled
    over still holds the old period's figure, which no longer counts: it has used nothing yet in the
    current one. Without a cycle the figure is the key's lifetime use.
    """
    used = key.used_tokens or 0
    if key.quota_refresh is None:
        return used
    start, _ = period_bounds(key.quota_refresh, now or utcnow())
    if key.quota_period_start is None or aware(key.quota_period_start) != start:
        return 0
    return used


def quota_resets_at(key: ApiKey, now: datetime | None = None) -> datetime | None:
    """When the current quota period ends; None for a lifetime quota."""
    return period_bounds(key.quota_refresh, now or utcnow())[1]


def status(key: ApiKey, now: datetime | None = None) -> str:
    """What a key can do right now: active, disabled, expired, or exhausted (quota used up)."""
    if not key.enabled:
        return "disabled"
    if is_expired(key, now):
        return "expired"
    if key.token_quota is not None and used_in_period(key, now) >= key.token_quota:
        return "exhausted"
    return "active"


def set_quota_refresh(
    session: Session, key: ApiKey, cycle: QuotaRefresh | None, now: datetime | None = None
) -> None:
    """Give a key another refresh cycle, counting what it already used in the new cycle's current
    period (its whole life, for none) from the usage statistics (`_recount`).

    The count has to move with the cycle: `used_tokens` belongs to a period of the old cycle, and the
    gateway would read it as another period's (a key switched from monthly to daily would start the
    day at zero however much it used today; one switched from daily to monthly would never be charged
    again this month, its stored period being newer than the month's). The records are what the usage
    writer charged from (prompt + completion tokens, by arrival time), so the recount is the figure
    the gateway would have reached under the new cycle. Call it with the key's row locked: a usage
    batch that already charged the key is then committed, and in the figures read here; one that has
    not charges it after the commit, in the new cycle (`gateway.usage._charge`).
    """
    if cycle == key.quota_refresh:
        return
    key.used_tokens, key.quota_period_start = _recount(session, key_tokens, key.public_id, cycle, now)
    key.quota_refresh = cycle


def set_workspace_quota_refresh(
    session: Session, workspace: Workspace, cycle: QuotaRefresh, now: datetime | None = None
) -> None:
    """`set_quota_refresh` for a workspace's quota (which always has a cycle): what the workspace used
    in the new cycle's current period. Call it with the workspace's row locked."""
    if cycle == workspace.quota_refresh:
        return
    counted = _recount(session, workspace_tokens, workspace.slug, cycle, now)
    workspace.used_tokens, workspace.quota_period_start = counted
    workspace.quota_refresh = cycle


def _recount(
    session: Session,
    count: Callable[[Session, str, datetime | None], int],
    ident: str,
    cycle: QuotaRefresh | None,
    now: datetime | None,
) -> tuple[int, datetime | None]:
    """Tokens used by `ident` in the current period of `cycle` (its whole life, for none), and that
    period's start. Read from the rollups plus the newer raw rows, so it stays exact when old usage
    rows were pruned (`portal.usage.retention`)."""
    start, _ = period_bounds(cycle, now or utcnow())
    return count(session, ident, start), start


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
    quota_refresh: QuotaRefresh | None = None,
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
        quota_refresh=quota_refresh,
        used_tokens=0,
    )
    session.add(key)
    session.flush()
    return key, secret
