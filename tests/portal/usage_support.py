"""Hand-made usage rows and the figures a report must show for them, computed the obvious way."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from portal.services import Services
from store.models import UsageRecord

_ids = itertools.count(1)


@dataclass(frozen=True)
class Row:
    at: datetime
    api_key: str = "key-a"
    workspace: str = "team-a"
    model: str = "chat-m"
    status: int = 200
    prompt: int = 10
    completion: int = 5
    cached: int = 0
    reasoning: int = 0
    estimated: bool = False
    ttft_ms: float | None = None
    latency_ms: float = 100.0
    cost: str = "0.000001000"

    def record(self) -> UsageRecord:
        return UsageRecord(
            at=self.at,
            request_id=f"req-{next(_ids)}-{id(self)}",
            api_key=self.api_key,
            workspace=self.workspace,
            model=self.model,
            endpoint="chat.completions",
            target="sim",
            region="cn-east",
            status=self.status,
            error_type=None if self.status < 400 else "rate_limited",
            stream=self.ttft_ms is not None,
            prompt_tokens=self.prompt,
            completion_tokens=self.completion,
            cached_tokens=self.cached,
            reasoning_tokens=self.reasoning,
            estimated=self.estimated,
            ttft_ms=self.ttft_ms,
            latency_ms=self.latency_ms,
            price_input_per_m=Decimal("1"),
            price_output_per_m=Decimal("2"),
            price_cached_per_m=Decimal("0.5"),
            cost=Decimal(self.cost),
        )


def insert(services: Services, rows: Iterable[Row]) -> None:
    with services.sessions() as session, session.begin():
        session.add_all([row.record() for row in rows])


def expected(rows: Iterable[Row]) -> dict[str, Any]:
    """The figures of `rows` in the API's JSON form."""
    rows = list(rows)
    ttfts = [r.ttft_ms for r in rows if r.ttft_ms is not None]
    n = len(rows)
    return {
        "requests": n,
        "errors": sum(r.status >= 400 for r in rows),
        "prompt_tokens": sum(r.prompt for r in rows),
        "completion_tokens": sum(r.completion for r in rows),
        "cached_tokens": sum(r.cached for r in rows),
        "reasoning_tokens": sum(r.reasoning for r in rows),
        "total_tokens": sum(r.prompt + r.completion for r in rows),
        "estimated_requests": sum(r.estimated for r in rows),
        "cost": format(sum((Decimal(r.cost) for r in rows), Decimal("0E-9")), "f"),
        "avg_latency_ms": round(sum(r.latency_ms for r in rows) / n, 3) if n else None,
        "avg_ttft_ms": round(sum(ttfts) / len(ttfts), 3) if ttfts else None,
    }


FIGURES = tuple(expected([]).keys())


def figures(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in FIGURES}
