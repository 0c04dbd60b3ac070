"""Pydantic's validation errors as stack issues: one per mistake, at its YAML path, with the fix.

Pydantic reports every branch of a union (`model: str | ModelSource`) and names union members in
the location (`model.constrained-str`); a typo'd key is "Extra inputs are not permitted". Users need
the path they wrote, the branch they meant, and the key they meant to write.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from fleet.errors import Issue

# Errors that only say "the input is not this branch's type": noise when another branch matched.
MISMATCH = frozenset(
    {"string_type", "literal_error", "int_type", "float_type", "bool_type", "model_type", "dict_type",
     "tuple_type", "list_type", "is_instance_of", "model_attributes_type", "int_parsing", "float_parsing"}
)  # fmt: skip


def _is_tag(part: int | str, classes: frozenset[str]) -> bool:
    """A union member's name in a location (not a field name or a key the user wrote)."""
    if not isinstance(part, str):
        return False
    return (
        part in classes
        or part in ("str", "int", "float", "bool")
        or part.startswith(("literal[", "function-", "constrained-"))
    )


def _members(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def _model_at(
    root: type[BaseModel], loc: Sequence[int | str], classes: frozenset[str]
) -> type[BaseModel] | None:
    """The model class the location `loc` (raw, with union tags) points into."""
    current: Any = root
    for part in loc:
        candidates = _members(current)
        if _is_tag(part, classes):
            picked = [c for c in candidates if getattr(c, "__name__", None) == part]
            current = picked[0] if picked else current
            continue
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if isinstance(part, str) and model is not None and part in model.model_fields:
            current = model.model_fields[part].annotation
            continue
        container = next((c for c in candidates if get_origin(c) in (tuple, list, dict)), None)
        if container is None:
            return None
        args = get_args(container)
        current = args[-1] if get_origin(container) is dict else args[0]
    found = [c for c in _members(current) if isinstance(c, type) and issubclass(c, BaseModel)]
    return found[0] if found else None


def _suggestion(root: type[BaseModel], err: ErrorDetails, classes: frozenset[str]) -> str | None:
    model = _model_at(root, err["loc"][:-1], classes)
    if model is None:
        return None
    close = difflib.get_close_matches(str(err["loc"][-1]), sorted(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key(root: type[BaseModel], err: ErrorDetails, classes: frozenset[str]) -> str:
    key = str(err["loc"][-1])
    close = _suggestion(root, err, classes)
    if close is not None:
        return f"unknown field {key!r}; did you mean {close!r}?"
    model = _model_at(root, err["loc"][:-1], classes)
    if model is None:
        return f"unknown field {key!r}"
    return f"unknown field {key!r}; expected one of: {', '.join(sorted(model.model_fields))}"


def _classes(root: type[BaseModel]) -> frozenset[str]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                a = stack.pop()
                if isinstance(a, type) and issubclass(a, BaseModel):
                    todo.append(a)
                stack.extend(get_args(a))
    return frozenset(m.__name__ for m in seen)


def issues_from(exc: ValidationError, root: type[BaseModel], path: str) -> list[Issue]:
    classes = _classes(root)
    errors = exc.errors(include_url=False)

    def split(err: ErrorDetails) -> tuple[tuple[int | str, ...], int | str] | None:
        for k, part in enumerate(err["loc"]):
            if _is_tag(part, classes):
                return tuple(err["loc"][:k]), part
        return None

    # A union branch the input got past the type check of (a mapping that is a ModelSource) is the
    # one the user meant: the other branches' "not a string" errors at the same place are dropped.
    matched: dict[tuple[int | str, ...], set[int | str]] = {}
    for err in errors:
        branch = split(err)
        if branch is not None and err["type"] not in MISMATCH:
            matched.setdefault(branch[0], set()).add(branch[1])
    # A list whose item failed also "has too few items": the item's error is the one to fix.
    failed = [tuple(e["loc"]) for e in errors]
    errors = [
        e
        for e in errors
        if not (
            e["type"] == "too_short"
            and any(len(f) > len(e["loc"]) and f[: len(e["loc"])] == tuple(e["loc"]) for f in failed)
        )
    ]
    # A misspelt required key is one mistake: "unknown field 'dtyp'; did you mean 'dtype'?" says it,
    # so "dtype: Field required" is dropped.
    meant = {
        (*err["loc"][:-1], close)
        for err in errors
        if err["type"] == "extra_forbidden" and (close := _suggestion(root, err, classes)) is not None
    }
    errors = [e for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) in meant)]
    out: dict[str, list[str]] = {}
    for err in errors:
        branch = split(err)
        if branch is not None and branch[0] in matched and branch[1] not in matched[branch[0]]:
            continue
        loc = [p for p in err["loc"] if not _is_tag(p, classes)]
        if err["type"] == "extra_forbidden":
            message = _unknown_key(root, err, classes)
        else:
            message = err["msg"].removeprefix("Value error, ")
        where = _loc_path(path, loc)
        if message not in out.setdefault(where, []):
            out[where].append(message)
    issues: list[Issue] = []
    for where, messages in out.items():
        # Every branch failed at the same place: one mistake, one issue listing what would do.
        mismatches = [m for m in messages if m.startswith("Input should be")]
        if len(mismatches) > 1:
            merged = "Input should be " + ", or ".join(m.removeprefix("Input should be ") for m in mismatches)
            messages = [merged] + [m for m in messages if m not in mismatches]
        issues += [Issue(where, m) for m in messages]
    return issues


def _loc_path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
