"""Run the real Pulumi program under mocks and capture the resource graph, with no engine.

The Pulumi CLI and engine are not needed: `pulumi.runtime.set_mocks` stands in for the engine, and
`Recorder` makes the mock monitor stricter than the stock one, like the engine:

- URNs are the engine's: the parent's whole type chain joined with `$`, the root stack left out
  (the stock mock keeps `pulumi:pulumi:Stack$` and only the parent's last type);
- a second registration of a URN is an error (the stock mock silently overwrites it);
- dependencies are recorded sorted: the SDK sends them in set order, which differs between runs.

Each captured resource has its inputs in wire format (camelCase keys, `apiVersion`/`kind`), with
secrets unwrapped and integral floats turned back into ints, so a `kubernetes:*` resource's props
are its manifest. Policies and golden tests read this graph; what they see is what `pulumi up`
would register. `set_mocks` is process-global: every capture installs its own mocks and root stack.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from components.program import deploy, main
from fleet.loader import NAMESPACE, stack_config
from fleet.pipeline import Rendering

PROJECT = "modelfleet"
ROOT_TYPE = "pulumi:pulumi:Stack"
PLACEHOLDER_KUBECONFIG = "placeholder-kubeconfig"


@dataclass(frozen=True)
class CapturedResource:
    urn: str
    type: str
    name: str
    custom: bool
    provider: str  # provider reference `<urn>::<id>`; '' when the default provider would be used
    parent: str  # parent URN; '' for resources at the root of the stack
    props: dict[str, Any]  # inputs in wire format, secrets unwrapped, integral floats as ints
    dependencies: tuple[str, ...] = ()  # URNs of explicit and implied dependencies (`depends_on`), sorted
    ignore_changes: tuple[str, ...] = ()  # property paths `pulumi up` leaves alone


@dataclass(frozen=True)
class Capture:
    """Everything one run registered, and the stack outputs it exported (resolved)."""

    stack: str
    resources: list[CapturedResource]  # sorted by URN
    exports: dict[str, Any] = field(default_factory=dict)

    def by_type(self, type_: str) -> list[CapturedResource]:
        return [r for r in self.resources if r.type == type_]


class DuplicateUrnError(Exception):
    """Two resources got the same URN; the engine would refuse the update."""


def plain(value: Any) -> Any:
    """Wire value -> plain data: secret envelopes unwrapped, integral floats as ints."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return plain(value.get("value"))
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class Echo(pulumi_mocks.Mocks):
    """Every resource's outputs are its inputs; ids are deterministic (`namespace/name` for
    Kubernetes objects, like the provider, else the logical name)."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        meta = args.inputs.get("metadata")
        if args.typ.startswith("kubernetes:") and isinstance(meta, dict) and meta.get("name"):
            ns = meta.get("namespace")
            return (f"{ns}/{meta['name']}" if ns else str(meta["name"])), dict(args.inputs)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        raise NotImplementedError(f"the program made an unexpected call to {args.token}")


class Recorder(pulumi_mocks.MockMonitor):
    """A mock monitor with the engine's URNs that rejects duplicates and records registrations."""

    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.captured: list[CapturedResource] = []
        self._urns: set[str] = set()
        self._lock = threading.Lock()  # registrations arrive on the SDK's executor threads

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # sdk/go/common/resource/urn.go NewURN: the parent's qualified type, unless it is the stack.
        if parent:
            parent_type = parent.split("::")[2]
            if parent_type != ROOT_TYPE:
                type_ = f"{parent_type}${type_}"
        return "urn:pulumi:" + "::".join([settings.get_stack(), settings.get_project(), type_, name])

    def RegisterResource(self, request: Any) -> Any:
        if request.type == ROOT_TYPE:
            return super().RegisterResource(request)  # type: ignore[no-untyped-call]
        urn = self.make_urn(request.parent, request.type, request.name)
        with self._lock:
            if urn in self._urns:
                raise DuplicateUrnError(f"duplicate URN {urn}")
            self._urns.add(urn)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        parent = request.parent if request.parent.split("::")[2:3] != [ROOT_TYPE] else ""
        resource = CapturedResource(
            urn=urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            provider=request.provider,
            parent=parent,
            props=plain(self.resources[urn].state),
            # The SDK sends a Python set (of URNs expanded from a set of Resources, ordered by
            # id()), so its order changes from run to run; the engine reads it as a set too.
            dependencies=tuple(sorted(request.dependencies)),
            ignore_changes=tuple(request.ignoreChanges),
        )
        with self._lock:
            self.captured.append(resource)
        return response


def _full_key(key: str) -> str:
    return key if ":" in key else f"{NAMESPACE}:{key}"


def _config_values(config: Mapping[str, Any]) -> dict[str, str]:
    """Config as the engine hands it to the program: `<namespace>:<key>` -> string (JSON for
    anything that is not a string)."""
    return {
        _full_key(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
    }


def _kubeconfig_keys(regions: Any) -> list[str]:
    keys: list[str] = []
    for region in regions if isinstance(regions, list) else []:
        cluster = region.get("cluster") if isinstance(region, dict) else None
        secret = cluster.get("kubeconfig_secret") if isinstance(cluster, dict) else None
        if isinstance(secret, str):
            keys.append(f"{NAMESPACE}:{secret}")
    return keys


_REPORTED: deque[BaseException] = deque(maxlen=64)


def _already_reported(errors: list[BaseException]) -> None:
    """A failed run's output futures still hold its errors; when they are collected asyncio would
    log "Future exception was never retrieved" for errors the caller already has (every duplicate
    URN fails its run). Keep that quiet."""
    _REPORTED.extend(errors)
    loop: asyncio.AbstractEventLoop = _ensure_event_loop()  # type: ignore[no-untyped-call]
    if loop.get_exception_handler() is None:
        loop.set_exception_handler(_quiet_reported)


def _quiet_reported(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    never_retrieved = "never retrieved" in str(context.get("message", ""))
    reported = isinstance(exc, DuplicateUrnError) or any(exc is e or exc is e.__cause__ for e in _REPORTED)
    if exc is None or not never_retrieved or not reported:
        loop.default_exception_handler(context)


def run_program(
    program: Callable[[], Mapping[str, Any] | None],
    stack: str = "test",
    config: Mapping[str, Any] | None = None,
    secret_keys: list[str] | None = None,
) -> Capture:
    """Install fresh mocks, a fresh root stack and `config` (`<namespace>:<key>` or a bare
    `modelfleet` key -> value); run `program`; wait for every registration and output; return
    what was registered and the program's return value, resolved (its exports)."""
    # Pulumi's SDK asks asyncio for the thread's current loop; anything that ran `asyncio.run` before
    # (the gateway, an async test) leaves none set, so make sure one exists.
    _ensure_event_loop()  # type: ignore[no-untyped-call]
    mocks = Echo()
    monitor = Recorder(mocks)
    settings.set_root_resource(cast(Any, None))  # a new root stack for this run, not the last one's
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    set_all_config(_config_values(config or {}), secret_keys or [])
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    exports: dict[str, Any] = {}

    async def body() -> None:
        out = program()
        exports.update(plain(await pulumi.Output.from_input(out or {}).future()) or {})

    try:
        _sync_await(run_pulumi_func(body))
    except BaseException as exc:
        _already_reported([exc])
        raise
    return Capture(stack, sorted(monitor.captured, key=lambda r: r.urn), exports)


def capture_stack(stacks_dir: Path, stack: str, *, config_overrides: dict[str, Any] | None = None) -> Capture:
    """Run the program for `stacks/Pulumi.<stack>.yaml` exactly as `__main__.py` does.

    `config_overrides` replaces config keys (`regions` or `modelfleet:regions`; values are plain
    data, `None` removes the key). Each region's kubeconfig secret gets a placeholder value.
    """
    raw: dict[str, Any] = {_full_key(k): v for k, v in stack_config(stacks_dir, stack).items()}
    for key, value in (config_overrides or {}).items():
        raw[_full_key(key)] = value
    values = _config_values({k: v for k, v in raw.items() if v is not None})
    secrets = _kubeconfig_keys(raw.get(f"{NAMESPACE}:regions"))
    for key in secrets:
        values.setdefault(key, PLACEHOLDER_KUBECONFIG)
    return run_program(lambda: main(stacks_dir), stack, values, secrets)


def capture(
    stacks_dir: Path, stack: str, *, config_overrides: dict[str, Any] | None = None
) -> list[CapturedResource]:
    return capture_stack(stacks_dir, stack, config_overrides=config_overrides).resources


def capture_rendering_stack(rendering: Rendering, stack: str = "test") -> Capture:
    """Deploy an already rendered fleet under mocks (placeholder kubeconfigs)."""

    def program() -> Mapping[str, Any]:
        kubeconfigs = {
            name: pulumi.Output.secret(PLACEHOLDER_KUBECONFIG)
            for name, region in rendering.fleet.regions.items()
            if region.cluster is not None and region.cluster.kubeconfig_secret is not None
        }
        return deploy(rendering, kubeconfigs)

    return run_program(program, stack)


def capture_rendering(rendering: Rendering, stack: str = "test") -> list[CapturedResource]:
    return capture_rendering_stack(rendering, stack).resources
