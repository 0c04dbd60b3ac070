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
from functools import cache
from importlib import resources
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


@dataclass(frozen=True)
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
    return sorted(
        p.name[len(prefix) : -len(".json")]
        for p in folder.iterdir()
        if p.name.startswith(prefix) and p.name.endswith(".json")
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


def _arity(spec: FlagSpec) -> tuple[int, int | None]:
    if spec.boolean:
        return 0, 0
    return {"?": (0, 1), "+": (1, None), "*": (0, None)}.get(str(spec.nargs), (1, 1))


def validate_args(schema: FlagSchema, argv: Sequence[str], path: str) -> list[Issue]:
    """Every problem argparse would find in `argv` (the engine's arguments, no entrypoint)."""
    issues: list[Issue] = []
    seen: set[str] = set()
    label = f"{schema.engine} {schema.version}"
    i, positionals, n = 0, 0, len(argv)
    while i < n:
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            if positionals < schema.positional:
                positionals += 1
            else:
                issues.append(Issue(path, f"unexpected value {token!r}: no flag takes it"))
            continue
        name, eq, inline = token.partition("=")
        spec = schema.lookup(name)
        if spec is None:
            hint = schema.suggest(name)
            more = f"; did you mean {hint}?" if hint else ""
            issues.append(Issue(path, f"unknown flag {name} for {label}{more}"))
            while i < n and not argv[i].startswith("--"):
                i += 1  # skip its values so they are not reported as stray
            continue
        if spec.action == "_HelpAction":
            issues.append(Issue(path, f"{name} prints help and exits; remove it"))
            continue
        canonical = name.replace("_", "-")
        if canonical in seen and spec.action not in REPEATABLE_ACTIONS:
            issues.append(Issue(path, f"{name} is given more than once"))
        seen.add(canonical)
        values = [inline] if eq else []
        low, high = _arity(spec)
        while i < n and not argv[i].startswith("--") and (high is None or len(values) < high):
            values.append(argv[i])
            i += 1
        if spec.boolean and values:
            issues.append(Issue(path, f"{name} is a boolean flag and takes no value (got {values[0]!r})"))
            continue
        if len(values) < low:
            issues.append(Issue(path, f"{name} needs a value"))
            continue
        for value in values:
            if spec.choices is not None and value not in spec.choices and not K8S_VAR.fullmatch(value):
                allowed = ", ".join(sorted(spec.choices))
                issues.append(Issue(path, f"{name} {value!r} is not one of: {allowed}"))
            elif (problem := _type_error(spec, value)) is not None:
                issues.append(Issue(path, f"{name} {problem}, got {value!r}"))
    return issues
