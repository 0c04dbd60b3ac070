"""The Pulumi program under mocks for a synthetic fleet: what CI pays to capture the graph."""

from __future__ import annotations

import time

from benchmarks.synthetic import synthetic_stack
from components.offline import capture_rendering_stack
from fleet.pipeline import render_fleet
from fleet.stack import build_fleet


def bench_mocks(n_servings: int, regions: int = 20) -> float:
    """Seconds to register n single-node servings (and their regions and pools) under mocks.

    The fleet is built and rendered first and not timed: this measures the Pulumi side only.
    """
    config, servings = synthetic_stack(n_servings, regions)
    rendering = render_fleet(build_fleet("bench", config, servings))
    start = time.perf_counter()
    capture = capture_rendering_stack(rendering, "bench")
    elapsed = time.perf_counter() - start
    if len(capture.by_type("modelfleet:index:ModelServing")) != len(rendering.placements):
        raise AssertionError("the capture lost servings")
    return elapsed


if __name__ == "__main__":
    for n in (10, 100, 1000):
        print(f"BENCH pulumi_mocks_{n}_servings {bench_mocks(n):.4g} s", flush=True)
