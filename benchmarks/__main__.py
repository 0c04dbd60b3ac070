"""`make bench`: every benchmark, one `BENCH <name> <value> <unit>` line per figure.

The core first (the offline pipeline at 1k and 10k servings, the Pulumi-mocks path against it), then
the portal (preflight + preview on 1,000 servings; 100 concurrent deploys; the kubernetes observer's
CPU per 1,000 pod events), the gateway (limiter, simulator, routing, metering, added latency under
open-loop load, for chat and for embeddings, rerank and images), the console's page times, and model
files (hub → store throughput, the downloader's peak memory on a 2 GB file).
`python -m benchmarks core|portal|gateway|console|files` runs one group.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks.report import bench, best_of
from benchmarks.synthetic import synthetic_stack
from fleet.pipeline import render_fleet
from fleet.planner import plan_fleet
from fleet.stack import build_fleet


def pipeline(n: int, regions: int = 20) -> Callable[[], object]:
    """Spec validation, planning, engine-flag validation and manifest rendering, from raw data."""
    config, servings = synthetic_stack(n, regions)

    def run() -> object:
        fleet = build_fleet("bench", config, servings)
        return render_fleet(fleet, plan_fleet(fleet))

    return run


def core() -> None:
    pipeline(200)()  # warm caches: schemas, templates, catalogs
    t1k = best_of(5, pipeline(1_000))
    t10k = best_of(3, pipeline(10_000))
    bench("render_1k_servings", t1k, "s")
    bench("render_10k_servings", t10k, "s")
    bench("render_per_serving_10k", t10k / 10_000 * 1e6, "us")
    bench("render_growth_10k_over_1k", t10k / t1k, "x")
    try:
        from benchmarks.pulumi_mocks import bench_mocks
    except ImportError:  # the components are optional for the pure benchmarks
        return
    mocks = bench_mocks(1_000)
    pure = best_of(3, pipeline(1_000))
    bench("pulumi_mocks_1k_servings", mocks, "s")
    bench("pure_1k_servings", pure, "s")
    bench("pulumi_mocks_over_pure_1k", mocks / pure, "x")


def portal() -> None:
    from benchmarks import local_deploy, observer, portal_preflight, portal_updates

    portal_preflight.main()
    portal_updates.main()
    local_deploy.main()
    observer.main()


def gateway() -> None:
    from benchmarks import (
        gateway_latency,
        gateway_limits,
        gateway_modalities,
        gateway_simulator,
        readiness_feed,
        upstream_client,
        usage_batch,
    )

    gateway_limits.main()
    gateway_simulator.main()
    gateway_latency.main()
    gateway_modalities.main()  # embeddings, rerank and images beside chat, each with its direct baseline
    readiness_feed.main()
    usage_batch.main()  # the usage writer's CPU per batch, beside the rows' INSERT alone
    upstream_client.main()  # the upstream client's CPU per call, beside aiohttp's and a bare stream


def files() -> None:
    from benchmarks import model_files

    model_files.main()


def console() -> None:
    from benchmarks import console_pages

    console_pages.main()


GROUPS: dict[str, Callable[[], None]] = {
    "core": core,
    "portal": portal,
    "gateway": gateway,
    "console": console,
    "files": files,
}


def main(argv: list[str]) -> None:
    unknown = [name for name in argv if name not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown benchmark group(s) {unknown}; choose from {sorted(GROUPS)}")
    for name in argv or list(GROUPS):
        GROUPS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
