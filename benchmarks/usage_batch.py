"""The usage writer's CPU per batch on PostgreSQL: rows, quota charges and settled markers in one
transaction (`gateway/usage.py`), beside the rows' INSERT alone in the same run.

`python -m benchmarks.usage_batch` prints `BENCH usage_batch_75_rows_cpu`, the baseline
`usage_insert_75_rows_cpu` and their ratio. 75 rows is one flush of a worker at 150 requests/s (the
gateway benchmark's 300 requests/s over two workers, a flush every 0.5 s). The writer runs in a thread
that shares the GIL with the requests, so its CPU is the data plane's too.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from benchmarks.gateway_latency import PG_URL, database
from benchmarks.report import bench
from gateway.usage import CHARGES, INFLIGHT, UsageWriter, _insert
from store.db import make_engine
from store.migrate import migrate
from store.models import ApiKey, Workspace
from store.periods import period_bounds

ROWS = 75
BATCHES = 60
_ids = itertools.count()


def batch(at: datetime) -> list[dict[str, Any]]:
    """Rows as the gateway's recorder queues them: one key of one workspace, monthly quotas."""
    period = period_bounds("month", at)[0]
    rows = []
    for _ in range(ROWS):
        rows.append(
            {
                "at": at,
                "request_id": f"bench-{next(_ids)}",
                "api_key": "key-bench",
                "workspace": "bench",
                "model": "bench-chat",
                "endpoint": "chat.completions",
                "target": "sim",
                "region": None,
                "status": 200,
                "error_type": None,
                "stream": False,
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "modality": "text",
                "units": 0,
                "estimated": False,
                "ttft_ms": None,
                "latency_ms": 1.25,
                "price_input_per_m": Decimal("1"),
                "price_output_per_m": Decimal("2"),
                "price_cached_per_m": Decimal("1"),
                "price_per_unit": Decimal("0"),
                "cost": Decimal("0.000017"),
                CHARGES: (("api_key", "key-bench", period), ("workspace", "bench", period)),
                INFLIGHT: True,
            }
        )
    return rows


def cpu_per_call(calls: list[Callable[[], object]]) -> float:
    """µs of this process's CPU per call (the database's own work is not in it)."""
    for call in calls[:10]:
        call()
    start = time.process_time()
    for call in calls[10:]:
        call()
    return (time.process_time() - start) / (len(calls) - 10) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, database(Path(tmp)) as (url, kind):
        if kind != "postgresql":
            print(f"# usage_batch: skipped, no PostgreSQL answers at {PG_URL}", flush=True)
            return
        engine = make_engine(url)
        migrate(engine)
        with Session(engine) as session, session.begin():
            workspace = Workspace(slug="bench", name="Bench", quota_refresh="month")
            session.add(workspace)
            session.flush()
            session.add(
                ApiKey(
                    public_id="key-bench",
                    secret_hash="x" * 64,
                    last4="abcd",
                    workspace_id=workspace.id,
                    name="bench",
                    created_by="bench",
                    quota_refresh="month",
                )
            )
        writer = UsageWriter(engine)
        at = datetime.now(UTC)

        def written(rows: list[dict[str, Any]]) -> Callable[[], object]:
            return lambda: writer.write(rows)

        def inserted(rows: list[dict[str, Any]]) -> Callable[[], object]:
            def run() -> object:
                with engine.begin() as conn:
                    return _insert(conn, rows)

            return run

        full = cpu_per_call([written(batch(at)) for _ in range(BATCHES)])
        alone = cpu_per_call([inserted(batch(at)) for _ in range(BATCHES)])
        engine.dispose()
    bench(f"usage_batch_{ROWS}_rows_cpu", full, "us")
    bench(f"usage_insert_{ROWS}_rows_cpu", alone, "us")
    bench(f"usage_batch_over_insert_{ROWS}_rows", full / alone, "x")


if __name__ == "__main__":
    main()
