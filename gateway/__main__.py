"""`python -m gateway --port 8080`: the data plane alone (the portal also serves it, under /v1).

It reads its own settings, checks that the database is at the schema revision it knows (it never
migrates), and serves from keys, MaaS models, limit rules, prices and published placements. No git,
no console, no bootstrap tokens.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

# redis-py imports the OpenTelemetry metrics SDK whenever it is installed (pulumi, a control-plane
# dependency, installs it), in case its OTel metrics are turned on; the data plane reports through
# Prometheus and never turns them on. Hidden from that import, a worker holds ~3 MB less and imports
# ~50 ms less (-X importtime). Only this program hides it (nothing in the data plane uses the SDK).
sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]

import uvicorn  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from gateway import bounds, workers  # noqa: E402
from gateway.app import create_gateway  # noqa: E402
from gateway.resources import open_resources  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from gateway.wire import CoalescingHttpProtocol  # noqa: E402
from store.schema import DatabaseUnreachable, SchemaMismatch  # noqa: E402
from store.settings import settings_problems  # noqa: E402

log = logging.getLogger("modelfleet.gateway")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="Modelfleet's MaaS gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--workers", type=at_least_one, default=1, help="processes (use Redis to share limits)"
    )
    args = parser.parse_args(argv)
    try:
        settings = GatewaySettings()
        # Checked once before any worker starts: a wrong database is a clear message, not N tracebacks.
        open_resources(settings).engine.dispose()
    except ValidationError as exc:
        cannot_start(settings_problems(exc))
    except (SchemaMismatch, DatabaseUnreachable, FileNotFoundError) as exc:
        cannot_start(str(exc))
    if args.workers > 1 and not settings.redis_url:
        # Allowed (e.g. to try it out), but each process would enforce every limit and quota alone.
        log.warning(
            "gateway: %d workers without MODELFLEET_REDIS_URL: each enforces the limits and quotas on its "
            "own, so together they admit up to %d times as much",
            args.workers,
            args.workers,
        )
    if args.workers > 1:
        config = uvicorn.Config(
            "gateway.__main__:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
            access_log=False,
            http=CoalescingHttpProtocol,
        )
        try:
            workers.serve(config)  # each worker on its own socket: the kernel spreads the connections
        except (OSError, ValueError) as exc:
            cannot_start(str(exc))
        return
    # No access log: a line per request costs more than the gateway's own work; the usage rows and
    # the Prometheus metrics record every request.
    uvicorn.run(
        app_from_env(),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        http=CoalescingHttpProtocol,
    )


def at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def cannot_start(reason: str) -> NoReturn:
    print(f"gateway: cannot start: {reason}", file=sys.stderr)
    raise SystemExit(2)


def app_from_env() -> Starlette:
    settings = GatewaySettings()
    app = create_gateway(open_resources(settings))
    bounds.install(app, settings)  # body, header and JSON-depth limits, refused in OpenAI's shape
    return app


if __name__ == "__main__":
    main()
