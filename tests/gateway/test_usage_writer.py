"""The usage writer's batching: rows that arrive during a write wait for the next round."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import create_engine

from gateway.usage import UsageWriter


class SlowDatabase(UsageWriter):
    """A writer whose every write takes 20 ms (a database under load), recording the batch sizes."""

    def __init__(self, **options: Any) -> None:
        super().__init__(create_engine("sqlite://"), **options)
        self.batches: list[int] = []

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        time.sleep(0.02)
        self.batches.append(len(rows))
        return len(rows)


def test_a_steady_stream_is_written_in_few_large_batches_not_many_small_ones() -> None:
    """One row a millisecond for 0.6 s, flushed every 0.2 s: a few batches. Writing whatever came in
    during the previous write (the old loop) made ~30 batches of ~20 rows, each paying a batch's fixed
    cost."""
    writer = SlowDatabase(batch_size=10_000, flush_seconds=0.2)
    writer.start()
    try:
        deadline = time.monotonic() + 0.6
        sent = 0
        while time.monotonic() < deadline:
            writer.put({"request_id": f"r{sent}"})
            sent += 1
            time.sleep(0.001)
        assert writer.flush(5)
    finally:
        writer.stop()
    assert sum(writer.batches) == sent
    assert len(writer.batches) <= 6, writer.batches


def test_a_full_batch_is_written_at_once_and_stop_writes_everything() -> None:
    writer = SlowDatabase(batch_size=100, flush_seconds=30)
    writer.start()
    try:
        for i in range(250):
            writer.put({"request_id": f"r{i}"})
        deadline = time.monotonic() + 5
        while sum(writer.batches) < 200 and time.monotonic() < deadline:  # two full batches, no timer
            time.sleep(0.01)
        assert sum(writer.batches) >= 200 and max(writer.batches) == 100
    finally:
        writer.stop()
    assert sum(writer.batches) == 250  # the partial rest on stop


def test_flush_waits_for_rows_queued_during_a_write() -> None:
    writer = SlowDatabase(batch_size=10_000, flush_seconds=30)
    writer.start()
    try:
        writer.put({"request_id": "first"})
        assert writer.flush(5)
        late = threading.Timer(0.005, writer.put, args=({"request_id": "late"},))
        late.start()
        writer.put({"request_id": "second"})
        late.join()
        assert writer.flush(5)
        assert sum(writer.batches) == 3
    finally:
        writer.stop()
