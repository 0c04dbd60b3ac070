"""The portal's command line: serve it, verify the audit chain, make a token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from portal.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=False, help="Modelfleet portal")
out = Console()


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    demo: Annotated[bool, typer.Option(help="load the demo stack, seed catalog, workspace and user")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="overrides MODELFLEET_DATA_DIR")] = None,
) -> None:
    """Start the portal on HOST:PORT (the default when no command is given)."""
    if ctx.invoked_subcommand is not None:
        return
    from portal.app import create_app

    overrides: dict[str, object] = {"demo": True} if demo else {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command()
def verify_audit() -> None:
    """Walk the audit chain; exit 1 at the first row that was changed, removed or reordered."""
    from portal.audit import verify
    from portal.db import make_engine, session_factory

    settings = Settings()
    with session_factory(make_engine(settings.resolved_database_url))() as session:
        report = verify(session)
    if report.ok:
        out.print(f"[green]audit chain intact[/]: {report.checked} rows")
        return
    out.print(
        f"[red]audit chain broken at row {report.broken_at}[/]: {report.reason} ({report.checked} rows ok)"
    )
    raise typer.Exit(1)


@app.command()
def rollup() -> None:
    """Fold new usage rows into the hourly and daily rollups now (the portal also does it every minute)."""
    from portal.db import make_engine, migrate, session_factory
    from portal.usage.rollup import rollup_once

    engine = make_engine(Settings().resolved_database_url)
    try:
        migrate(engine)
        run = rollup_once(session_factory(engine))
    finally:
        engine.dispose()
    out.print(f"rolled up {run.rows} usage rows into {run.buckets} buckets (watermark {run.last_id})")


@app.command()
def token() -> None:
    """Print a fresh token value for MODELFLEET_ADMIN_TOKEN."""
    from portal.security import USER_TOKEN_PREFIX, issue

    print(issue(USER_TOKEN_PREFIX).value)


def main() -> None:
    app()
