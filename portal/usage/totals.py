"""One key's token use since a time, from the rollups plus the raw tail: exact whether or not old raw
rows were pruned (`portal.usage.retention`), where a SUM over `usage_records` would miss them. Quota
recounts (`portal.keys`) use it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from portal.usage.report import UsageQuery, usage_report
from store.buckets import is_aligned

EVER = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = datetime(9999, 1, 1, tzinfo=UTC)  # no upper bound: rows stamped ahead by a skewed clock count too


def key_tokens(session: Session, api_key: str, since: datetime | None = None) -> int:
    """Prompt + completion tokens of the requests made with `api_key` (public id) that arrived at or
    after `since` (None: ever), the figure the usage writer charged quotas with.

    `since` must be a whole UTC hour (quota periods start at midnight): the rollups hold hours.
    """
    return _tokens(session, UsageQuery(since=_since(since), until=NEVER, group_by=(), api_key=api_key))


def workspace_tokens(session: Session, workspace: str, since: datetime | None = None) -> int:
    """`key_tokens` for every key of a workspace (slug)."""
    return _tokens(session, UsageQuery(since=_since(since), until=NEVER, group_by=(), workspaces=[workspace]))


def _since(since: datetime | None) -> datetime:
    if since is not None and not is_aligned(since, "hour"):
        raise ValueError(f"since must be a whole UTC hour, not {since.isoformat()}")
    return since or EVER


def _tokens(session: Session, query: UsageQuery) -> int:
    return usage_report(session, query).totals.total_tokens
