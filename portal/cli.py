"""The portal's command line: serve it, verify the audit chain, roll up and prune usage, make a token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from rich.console import Console

from portal.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

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
        # `python -m portal --data-dir D rollup`: the command works on D's database, not the default's
        ctx.obj = data_dir
        return
    from portal.app import create_app

    with refusing("start"):
        built = create_app(serve_settings(host, port, demo=demo, data_dir=data_dir))
    uvicorn.run(built, host=host, port=port, log_level="info")


@contextmanager
def refusing(doing: str) -> Iterator[None]:
    """What stops the portal before it serves or a command before it runs (a setting refused, a
    database it cannot reach, or one a newer release migrated) is one line naming the cause, and exit
    status 2: not a traceback."""
    from pydantic import ValidationError

    from store.schema import DatabaseUnreachable, SchemaMismatch
    from store.settings import settings_problems

    try:
        yield
    except ValidationError as exc:
        reason = settings_problems(exc)
    except (SchemaMismatch, DatabaseUnreachable) as exc:
        reason = str(exc)
    else:
        return
    out.print(f"[red]portal: cannot {doing}[/]: {reason}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def local_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server listening on HOST:PORT: a wildcard address
    (every interface) is reached through the loopback one."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve_settings(host: str, port: int, *, demo: bool = False, data_dir: Path | None = None) -> Settings:
    """The settings of `python -m portal`. The gateway is served on the portal's own port (under /v1),
    so unless MODELFLEET_GATEWAY_BASE_URL says otherwise (a proxy in front, another host name), the
    URL the portal shows and the demo prints is the one it listens on."""
    overrides: dict[str, object] = {"demo": True} if demo else {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if "gateway_base_url" not in settings.model_fields_set:  # not given in the environment
        settings = settings.model_copy(update={"gateway_base_url": local_url(host, port)})
    return settings


def command_settings(ctx: typer.Context) -> Settings:
    """The settings of a command: the environment's, with the `--data-dir` given before the command."""
    data_dir = ctx.find_root().obj
    with refusing(ctx.info_name or "run"):
        return Settings(data_dir=data_dir) if data_dir is not None else Settings()


@contextmanager
def migrated_engine(ctx: typer.Context, settings: Settings | None = None) -> Iterator[Engine]:
    """The command's database, brought to this release's schema first (refused in one line when it
    cannot be: unreachable, or migrated by a newer release); disposed of afterwards."""
    from store.db import make_engine
    from store.migrate import migrate

    engine = make_engine((settings or command_settings(ctx)).resolved_database_url)
    try:
        with refusing(ctx.info_name or "run"):
            migrate(engine)
        yield engine
    finally:
        engine.dispose()


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Bring the database to this release's schema (the portal also does it at every start; the gateway
    never does and refuses a database at another revision)."""
    from store.migrate import head_revision

    with migrated_engine(ctx):
        pass
    out.print(f"database at schema revision {head_revision()}")


@app.command()
def verify_audit(ctx: typer.Context) -> None:
    """Walk the audit chain with the portal's audit keys and compare it with the newest signed
    checkpoint; exit 1 at the first row that was changed, removed or reordered, or when rows were cut
    from the end."""
    from portal.audit_checkpoint import verify_with
    from portal.audit_keys import AuditKeyError, load_audit_keys
    from store.db import make_engine, session_factory

    settings = command_settings(ctx)
    try:
        keys = load_audit_keys(settings)
    except AuditKeyError as exc:
        out.print(f"[red]cannot verify[/]: {exc}")
        raise typer.Exit(2) from None
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_factory(engine)() as session:
            report = verify_with(session, keys, settings.resolved_audit_checkpoint_dir)
    finally:
        engine.dispose()
    if report.ok:
        sealed = f", matching the checkpoint at row {report.sealed_through}" if report.sealed_through else ""
        out.print(f"[green]audit chain intact[/]: {report.checked} rows{sealed}")
        return
    out.print(
        f"[red]audit chain broken at row {report.broken_at}[/]: {report.reason} ({report.checked} rows ok)"
    )
    raise typer.Exit(1)


@app.command()
def rotate_audit_key(ctx: typer.Context) -> None:
    """Add the next audit key under the data directory; the portal seals new rows with it after a
    restart (older rows stay verifiable with the older keys, which are kept)."""
    from portal.audit_keys import AuditKeyError, rotate

    try:
        key_id = rotate(command_settings(ctx))
    except AuditKeyError as exc:
        out.print(f"[red]cannot rotate[/]: {exc}")
        raise typer.Exit(2) from None
    out.print(f"audit key {key_id} added; restart the portal to seal new rows with it")


@app.command()
def rollup(ctx: typer.Context) -> None:
    """Fold new usage rows into the hourly and daily rollups now (the portal also does it every
    MODELFLEET_USAGE_ROLLUP_INTERVAL_SECONDS, 60 by default)."""
    from portal.usage.rollup import rollup_once
    from store.db import session_factory

    with migrated_engine(ctx) as engine:
        run = rollup_once(session_factory(engine))
    out.print(f"rolled up {run.rows} usage rows into {run.buckets} buckets (watermark {run.last_id})")


@app.command()
def prune_usage(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(min=1, help="keep this many days of raw rows; default MODELFLEET_USAGE_RETENTION_DAYS"),
    ] = None,
) -> None:
    """Roll up, then delete raw usage rows older than DAYS days that the rollups hold (statistics keep
    them; the portal also does it every round when MODELFLEET_USAGE_RETENTION_DAYS is set)."""
    from portal.usage import retention
    from portal.usage.rollup import rollup_once
    from store.db import session_factory

    settings = command_settings(ctx)
    days = days if days is not None else settings.usage_retention_days
    if days is None:
        out.print("[red]how many days to keep?[/] pass --days N or set MODELFLEET_USAGE_RETENTION_DAYS")
        raise typer.Exit(2)
    with migrated_engine(ctx, settings) as engine:
        sessions = session_factory(engine)
        run = rollup_once(sessions)  # rows not rolled up yet are never deleted: roll them up first
        cutoff = retention.retention_cutoff(days)
        deleted = retention.prune_usage(sessions, cutoff)
    stamp = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")
    out.print(f"deleted {deleted} usage rows from before {stamp} (watermark {run.last_id})")


@app.command()
def token() -> None:
    """Print a fresh token value for MODELFLEET_ADMIN_TOKEN."""
    from store.security import USER_TOKEN_PREFIX, issue

    print(issue(USER_TOKEN_PREFIX).value)


def main() -> None:
    app()
