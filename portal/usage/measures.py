"""What every rollup row and report line sums, and how those sums read from raw usage rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, case, func

from portal.usage.sql import cost_nanos
from store.models import UsageRecord, UsageRollup


@dataclass(slots=True)
class Sums:
    """Additive figures of a set of requests. Everything is a sum, so buckets fold into larger ones
    and the rollups plus the raw tail add up to the same figures as the raw rows alone."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    units: int = 0  # images, audio seconds, characters or documents (gateway/units.py); 0 for tokens
    estimated_requests: int = 0
    cost_nanos: int = 0
    latency_ms_sum: float = 0.0
    ttft_ms_sum: float = 0.0
    ttft_requests: int = 0

    def add(self, other: Sums) -> None:
        for name in MEASURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Sums:
        """From a result row labelled with the measure names (SQL sums may come back as Decimal or
        None: PostgreSQL's SUM(bigint) is numeric)."""
        out = cls()
        for name in MEASURES:
            value = row[name]
            if value is None:
                continue
            setattr(out, name, float(value) if name in FLOAT_MEASURES else int(value))
        return out

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> Decimal:
        return Decimal(self.cost_nanos).scaleb(-9)

    @property
    def avg_latency_ms(self) -> float | None:
        return round(self.latency_ms_sum / self.requests, 3) if self.requests else None

    @property
    def avg_ttft_ms(self) -> float | None:
        return round(self.ttft_ms_sum / self.ttft_requests, 3) if self.ttft_requests else None


MEASURES: tuple[str, ...] = tuple(f.name for f in fields(Sums))
FLOAT_MEASURES = frozenset({"latency_ms_sum", "ttft_ms_sum"})


def raw_sums() -> list[ColumnElement[Any]]:
    """SUM expressions over `usage_records`, labelled like `Sums`' fields."""
    r = UsageRecord
    return [
        func.count().label("requests"),
        func.sum(case((r.status >= 400, 1), else_=0)).label("errors"),
        func.sum(r.prompt_tokens).label("prompt_tokens"),
        func.sum(r.completion_tokens).label("completion_tokens"),
        func.sum(r.cached_tokens).label("cached_tokens"),
        func.sum(r.reasoning_tokens).label("reasoning_tokens"),
        func.sum(r.units).label("units"),
        func.sum(case((r.estimated, 1), else_=0)).label("estimated_requests"),
        func.sum(cost_nanos(r.cost)).label("cost_nanos"),
        func.sum(r.latency_ms).label("latency_ms_sum"),
        func.sum(func.coalesce(r.ttft_ms, 0.0)).label("ttft_ms_sum"),
        func.count(r.ttft_ms).label("ttft_requests"),
    ]


def rollup_sums() -> list[ColumnElement[Any]]:
    """SUM expressions over `usage_rollups`, labelled like `Sums`' fields."""
    return [func.sum(getattr(UsageRollup, name)).label(name) for name in MEASURES]


def total(parts: Iterable[Sums]) -> Sums:
    out = Sums()
    for part in parts:
        out.add(part)
    return out
