"""Input the database can store, checked once for every route before any handler runs.

PostgreSQL refuses two things that pydantic lets through: text with a NUL byte, and integers wider
than the column (ids are 32-bit, counters and quotas 64-bit). Unchecked, both surface as a DataError
deep in a handler, a 500. So every route depends on `storable_input`, which answers 422 naming the
field: NUL bytes anywhere in the path, query or JSON body; integer path and query parameters outside
32 bits (they are ids and counts of 32-bit columns); integers in a JSON body outside 64 bits (the
widest column). Fields narrower than that declare their own bounds in their models.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from fastapi import Request
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute

from portal.errors import Invalid

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


def _is_int(annotation: Any) -> bool:
    """`int`, `int | None`, `list[int]`, `Annotated[int, …]`: anything whose values are integers."""
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        return any(_is_int(a) for a in typing.get_args(annotation))
    return False


def _check_int(field: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if value < low or value > high:
        raise Invalid.field(field, f"{value} is out of range (from {low} to {high})")


def _check_text(field: str, value: str) -> None:
    if "\x00" in value:
        raise Invalid.field(field, "must not contain a NUL byte (\\u0000)")


CACHE_ATTRIBUTE = "_modelfleet_int_params"


def _int_params(route: APIRoute) -> frozenset[str]:
    """The route's integer parameters, found once and kept on the route (routes are unhashable)."""
    found: frozenset[str] | None = getattr(route, CACHE_ATTRIBUTE, None)
    if found is None:
        params = get_flat_params(route.dependant)
        found = frozenset(f.alias for f in params if _is_int(f.field_info.annotation))
        setattr(route, CACHE_ATTRIBUTE, found)
    return found


def check_json(value: Any, field: str = "") -> None:
    """Walk a decoded JSON body (its depth is bounded by the bounds middleware)."""
    if isinstance(value, str):
        _check_text(field or "body", value)
    elif isinstance(value, bool):
        return
    elif isinstance(value, int):
        _check_int(field or "body", value, INT64)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(f"{field}.{key}" if field else key, key)
            check_json(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{field}[{index}]")


async def storable_input(request: Request) -> None:
    route = request.scope.get("route")
    int_params = _int_params(route) if isinstance(route, APIRoute) else frozenset()
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        _check_text(name, value)
        if name in int_params:
            try:
                number = int(value)
            except ValueError:
                continue  # not a number: the route's own validation names it
            _check_int(name, number, INT32)
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return
    raw = await request.body()  # read once; FastAPI hands the same request to the handler
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return  # the route's own validation answers a malformed body
    check_json(body)
