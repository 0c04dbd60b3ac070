"""Engine argument validation against each engine's real flag schema, per pinned version.

The schemas in `fleet/data/engines/` were read from the engines' own argparse parsers, so a flag
that passes here is one the engine accepts: a typo fails at render time, not after an image pull.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from itertools import pairwise
from typing import Any

from fleet.errors import FlagError, Issue

BOOLEAN_ACTIONS = frozenset(
    {"_StoreTrueAction", "BooleanOptionalAction", "DeprecatedStoreTrueAction", "_StoreFalseAction"}
)
REPEATABLE_ACTIONS = frozenset({"_AppendAction"})
# A Kubernetes dependent environment variable, expanded by the kubelet in args: $(LWS_WORKER_INDEX).
K8S_VAR = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")
HUMAN_INT = re.compile(r"^[0-9]+(\.[0-9]+)?[kKmMgGtT]?$")
JSON_TYPES = frozenset({"loads", "json_list_type", "parse_dataclass", "union_dict_and_str"})


@dataclass(frozen=True, slots=True)
class FlagSpec:
    action: str
    nargs: str | int | None
    type: str | None
    choices: frozenset[str] | None

    @property
    def boolean(self) -> bool:
        return self.action in BOOLEAN_ACTIONS or self.nargs == 0 or self.nargs == "0"


@dataclass(frozen=True, eq=False)  # identity: one cached instance per engine version, hashable
class FlagSchema:
    engine: str
    version: str
    positional: int
    underscores: bool
    flags: dict[str, FlagSpec]

    def lookup(self, name: str) -> FlagSpec | None:
        spec = self.flags.get(name)
        if spec is None and self.underscores and "_" in name:
            spec = self.flags.get(name.replace("_", "-"))
        if spec is None and name.startswith("--no-"):
            positive = self.flags.get("--" + name[5:])
            if positive is not None and positive.action == "BooleanOptionalAction":
                return positive
        return spec

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.flags.keys(), n=1, cutoff=0.75)
        return close[0] if close else None


def available_versions(engine: str) -> list[str]:
    folder = resources.files("fleet").joinpath("data/engines")
    prefix = f"{engine}-"
    # A version starts with a digit: sglang-diffusion-0.5.23.json is not an SGLang version.
    return sorted(
        p.name[len(prefix) : -len(".json")]
        for p in folder.iterdir()
        if p.name.startswith(prefix)
        and p.name.endswith(".json")
        and p.name[len(prefix) : len(prefix) + 1].isdigit()
    )


@cache
def load_schema(engine: str, version: str) -> FlagSchema:
    """The flag schema of `engine` at `version`; FlagError if we have none (never a silent pass)."""
    path = resources.files("fleet").joinpath(f"data/engines/{engine}-{version}.json")
    if not path.is_file():
        known = ", ".join(available_versions(engine)) or "none"
        raise FlagError(
            [
                Issue(
                    "",
                    f"no flag schema for {engine} {version} (have: {known}); generate one with "
                    "fleet/data/engines/dump_flags.py",
                )
            ]
        )
    raw: dict[str, Any] = json.loads(path.read_text("utf-8"))
    flags = {
        name: FlagSpec(
            action=f["action"],
            nargs=f["nargs"],
            type=f["type"],
            choices=frozenset(str(c) for c in f["choices"]) if f["choices"] is not None else None,
        )
        for name, f in raw["flags"].items()
    }
    return FlagSchema(
        engine=raw["engine"],
        version=raw["version"],
        positional=len(raw.get("positional", [])),
        underscores=raw["engine"] == "vllm",
        flags=flags,
    )


def _type_error(spec: FlagSpec, value: str) -> str | None:
    if K8S_VAR.fullmatch(value):
        return None  # resolved by the kubelet from the pod's env
    kind = spec.type
    try:
        if kind == "int":
            int(value)
        elif kind == "float":
            float(value)
        elif kind == "bool":
            if value.lower() not in {"true", "false", "1", "0"}:
                return "expects true or false"
        elif kind in ("human_readable_int", "human_readable_int_or_auto"):
            if not HUMAN_INT.match(value) and not (
                kind == "human_readable_int_or_auto" and value in {"auto", "-1"}
            ):
                return "expects an integer such as 32768 or 32k"
        elif kind in JSON_TYPES and (value[:1] in "{[" or kind in {"loads", "json_list_type"}):
            json.loads(value)
    except ValueError:
        return f"expects {kind}" if kind not in JSON_TYPES else "expects valid JSON"
    return None


_ARITY: dict[str | int | None, tuple[int, int | None]] = {"?": (0, 1), "+": (1, None), "*": (0, None)}
# Value types `_type_error` checks; a flag of any other type without choices takes any value.
CHECKED_TYPES = frozenset(
    {"int", "float", "bool", "human_readable_int", "human_readable_int_or_auto", *JSON_TYPES}
)


@lru_cache(maxsize=1 << 12)
def _free(schema: FlagSchema, token: str) -> bool:
    """Whether no value can be wrong for this flag (a name, a path) or it is unknown: then what
    `_check_group` finds depends on how many values follow it, not on what they are."""
    spec = schema.lookup(token.partition("=")[0])
    return spec is None or (spec.choices is None and spec.type not in CHECKED_TYPES)


@lru_cache(maxsize=1 << 16)
def _check_group(
    schema: FlagSchema, token: str, values: tuple[str, ...]
) -> tuple[tuple[str, ...], int, str | None]:
    """(problems, values consumed, canonical name to count for duplicates) of one flag and the
    values that follow it. Cached: fleets repeat the same flag groups thousands of times."""
    name, eq, inline = token.partition("=")
    spec = schema.lookup(name)
    if spec is None:
        hint = schema.suggest(name)
        more = f"; did you mean {hint}?" if hint else ""
        # its values are skipped too, so they are not reported again as stray
        return (f"unknown flag {name} for {schema.engine} {schema.version}{more}",), len(values), None
    if spec.action == "_HelpAction":
        return (f"{name} prints help and exits; remove it",), 0, None
    canonical = name.replace("_", "-") if spec.action not in REPEATABLE_ACTIONS else None
    low, high = _ARITY.get(spec.nargs, (1, 1)) if not spec.boolean else (0, 0)
    if eq:
        if spec.boolean:
            return (f"{name} is a boolean flag and takes no value (got {inline!r})",), 0, canonical
        taken, used = (inline, *values[: 0 if high == 1 else None]), 0 if high == 1 else len(values)
    else:
        used = len(values) if high is None else min(high, len(values))
        taken = values[:used]
    if len(taken) < low:
        return (f"{name} needs a value",), used, canonical
    problems = tuple(f"{name} {p}" for v in taken if (p := _value_problem(spec, v)) is not None)
    return problems, used, canonical


def validate_args(schema: FlagSchema, argv: Sequence[str], path: str) -> list[Issue]:
    """Every problem argparse would find in `argv` (the engine's arguments, no entrypoint)."""
    issues: list[Issue] = []
    seen: set[str] = set()
    # Where each flag starts; a flag's values run to the next flag (one pass, no per-token calls).
    starts = [i for i, token in enumerate(argv) if token.startswith("--")]
    leading = argv[: starts[0]] if starts else argv
    positionals = min(len(leading), schema.positional)
    for value in leading[positionals:]:
        issues.append(Issue(path, f"unexpected value {value!r}: no flag takes it"))
    for start, stop in pairwise([*starts, len(argv)]):
        token = argv[start]
        values = tuple(argv[start + 1 : stop])
        # A free flag's values (a served name: one per serving) would each fill the cache anew.
        shape = ("",) * len(values) if _free(schema, token) else values
        problems, used, canonical = _check_group(schema, token, shape)
        if canonical is not None:
            if canonical in seen:
                issues.append(Issue(path, f"{token.partition('=')[0]} is given more than once"))
            seen.add(canonical)
        if problems:
            issues += [Issue(path, p) for p in problems]
        for value in values[used:]:
            if positionals < schema.positional:
                positionals += 1
            else:
                issues.append(Issue(path, f"unexpected value {value!r}: no flag takes it"))
    return issues


@lru_cache(maxsize=1 << 16)
def _value_problem(spec: FlagSpec, value: str) -> str | None:
    """What is wrong with one value of a flag. Cached: fleets repeat the same values thousands of
    times (ports, memory fractions, lengths), and this is the validator's hot path."""
    if spec.choices is not None and value not in spec.choices and not K8S_VAR.fullmatch(value):
        return f"{value!r} is not one of: {', '.join(sorted(spec.choices))}"
    problem = _type_error(spec, value)
    return f"{problem}, got {value!r}" if problem is not None else None
