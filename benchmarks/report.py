"""What every benchmark shares: the `BENCH <name> <value> <unit>` line and best-of-N timing."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.4g} {unit}", flush=True)


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of `runs` timed calls, each after a collection, so a stray GC pause is not measured."""
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
