"""The two expressions the rollups need that SQL spells differently on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, DateTime
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

NANOS = 1_000_000_000


class hour_start(FunctionElement[Any]):
    """The start of the UTC hour of a timestamp column."""

    type = DateTime()
    inherit_cache = True
    name = "hour_start"


@compiles(hour_start, "sqlite")
def _hour_start_sqlite(element: hour_start, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored times are UTC wall clocks ('YYYY-MM-DD HH:MM:SS.ffffff'); the result parses back the same way.
    return f"strftime('%Y-%m-%d %H:00:00', {compiler.process(element.clauses, **kw)})"


@compiles(hour_start, "postgresql")
def _hour_start_postgresql(element: hour_start, compiler: SQLCompiler, **kw: Any) -> str:
    # `date_trunc` on a timestamptz truncates in the session's time zone; in UTC explicitly instead.
    return f"date_trunc('hour', {compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC')"


class cost_nanos(FunctionElement[Any]):
    """A `Numeric(…, 9)` cost as an exact integer of 1e-9 units.

    PostgreSQL keeps the column exact, so multiplying is exact. SQLite keeps it as a float: it is
    printed with 9 decimals (the correctly rounded value SQLAlchemy would return for the row) and the
    decimal point dropped, so each row contributes exactly what reading it would show and the sum,
    in integers, loses nothing.
    """

    type = BigInteger()
    inherit_cache = True
    name = "cost_nanos"


@compiles(cost_nanos, "sqlite")
def _cost_nanos_sqlite(element: cost_nanos, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(REPLACE(printf('%.9f', {compiler.process(element.clauses, **kw)}), '.', '') AS INTEGER)"


@compiles(cost_nanos, "postgresql")
def _cost_nanos_postgresql(element: cost_nanos, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} * {NANOS} AS BIGINT)"
