"""The record of every request the gateway answered or refused: a usage row (queued for the batch
writer) and the Prometheus figures, charged to the in-process quota counters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway import metrics
from gateway.metering import Metered, Usage, cost
from gateway.quotas import Counter, LocalQuotas
from gateway.snapshot import KeyEntry, ModelEntry, TargetSpec
from gateway.usage import CHARGES, INFLIGHT, UsageWriter


@dataclass(slots=True)
class Sample:
    """What `record()` needs to know about one served (or refused) request."""

    request_id: str
    at: datetime
    started: float
    key: KeyEntry
    model: ModelEntry
    endpoint: str
    stream: bool
    status: int
    error_type: str | None = None
    target: TargetSpec | None = None
    metered: Metered | None = None
    charges: tuple[Counter, ...] = ()
    inflight: bool = False  # an in-flight marker was written for it (gateway/inflight.py)
    modality: str = "text"  # gateway/endpoint.py's Modality
    units_asked: int = 0  # what admission charged (gateway/units.py)


class Recorder:
    def __init__(self, writer: UsageWriter, local_quotas: LocalQuotas) -> None:
        self.writer = writer
        self.local_quotas = local_quotas

    def record(self, sample: Sample) -> Usage:
        """Queue the usage row and count the metrics. Synchronous on purpose: it runs in `finally`
        blocks of cancelled tasks, where an await would raise again."""
        metered = sample.metered
        usage = metered.usage if metered is not None else Usage()
        prices = sample.model.prices
        cached_price = prices.cached_input_per_million
        units = metered.units if metered is not None else 0
        amount = cost(usage, prices, units) if metered is not None else Decimal(0)
        latency = time.perf_counter() - sample.started
        ttft = metered.ttft_seconds if metered is not None else None
        row: dict[str, Any] = {
            "at": sample.at,
            "request_id": sample.request_id,
            "api_key": sample.key.public_id,
            "workspace": sample.key.workspace,
            "model": sample.model.public_id,
            "endpoint": sample.endpoint,
            "target": sample.target.name[:255] if sample.target is not None else None,
            "region": sample.target.region if sample.target is not None else None,
            "status": sample.status,
            "error_type": sample.error_type,
            "stream": sample.stream,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "modality": sample.modality,
            "units": units,
            "estimated": usage.estimated,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "latency_ms": round(latency * 1000, 3),
            "price_input_per_m": prices.input_per_million,
            "price_output_per_m": prices.output_per_million,
            "price_cached_per_m": prices.input_per_million if cached_price is None else cached_price,
            "price_per_unit": prices.per_unit,
            "cost": amount,
            CHARGES: sample.charges,
            INFLIGHT: sample.inflight,
        }
        tokens = usage.total_tokens
        if tokens:
            for counter in sample.charges:
                self.local_quotas.charge(counter, tokens)
        self.writer.put(row)
        model = sample.model.public_id
        metrics.observe_request(model, sample.endpoint, sample.status, latency)
        if ttft is not None:
            metrics.child(metrics.TTFT, model).observe(ttft)
        if units:
            metrics.child(metrics.UNITS, model, sample.modality).inc(units)
        if tokens:
            metrics.observe_tokens(
                model,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens,
            )
        return usage
