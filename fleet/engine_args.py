"""Engine command lines per pod role, built the same way for every engine and vendor:

1. the engine template (with the vendor overlay, if any) renders what the platform owns: model,
   name, host, port, parallelism, multi-node rendezvous;
2. the deploy template's default arguments, then the serving's extra arguments (the user's win);
3. the vendor's forced arguments (quirks), which must not contradict anything above;
4. the whole argv is validated against the flag schema of the pinned engine version.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Literal

from fleet import capability, catalog, network, render
from fleet.errors import FlagError, Issue, SpecError
from fleet.flags import FlagSchema, available_versions, load_schema, validate_args
from fleet.planner import PlacementPlan
from fleet.spec import DeployTemplate, ModelServing
from fleet.stack import Fleet, PoolFacts

Role = Literal["single", "leader", "worker"]
Launcher = Literal["native", "ray"]
RAY_PORT = 6379
RAY_WAIT_SECONDS = 5
RAY_WAIT_TRIES = 120  # ten minutes for the leader to pull, start and open its head; then the group restarts
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"  # injected by LeaderWorkerSet, expanded by the kubelet
WORKER_INDEX = "$(LWS_WORKER_INDEX)"


@dataclass(frozen=True, slots=True)
class RoleCommand:
    command: tuple[str, ...]
    args: tuple[str, ...]
    engine_args: tuple[str, ...]  # what was validated against the flag schema


@dataclass(frozen=True, slots=True)
class EngineLaunch:
    engine: str
    engine_version: str
    image: str
    port: int
    health_path: str | None
    launcher: Launcher | None
    env: dict[str, str]
    field_env: dict[str, str]
    roles: dict[Role, RoleCommand]
    flags_checked: bool


@lru_cache(maxsize=1 << 12)  # flag tokens repeat across a fleet; bounded, as extra_args are free text
def _key(token: str) -> str:
    name = token.split("=", 1)[0].replace("_", "-")
    return "--" + name[5:] if name.startswith("--no-") else name


@cache
def _groups_of(tokens: tuple[str, ...]) -> dict[str, list[str]]:
    """`_groups` of the arguments a template or serving declares (tuples, shared by many placements)."""
    return _groups(tokens)


def _groups(tokens: Iterable[str]) -> dict[str, list[str]]:
    """Flag name -> its tokens; leading values (positionals) under ''."""
    out: dict[str, list[str]] = {}
    key = ""
    for token in tokens:
        if token.startswith("--"):
            key = _key(token)
            out[key] = [token]
        else:
            out.setdefault(key, []).append(token)
    return out


def pick_image(t: DeployTemplate, pool: PoolFacts) -> str | Issue:
    vendor, family = pool.spec.vendor, pool.family
    image = t.images.get(f"{vendor}/{family}") or t.images.get(vendor)
    if image is None and t.engine != "custom":
        image = pool.vendor.default_image(t.engine, t.engine_version, family)
    if image is None:
        return Issue(
            f"templates[{t.name}].images",
            f"no image for {vendor}/{family} running {t.engine} {t.engine_version}; the catalog has "
            f"no default, so set images.{vendor}",
        )
    return image


def pick_launcher(t: DeployTemplate, pool: PoolFacts, schema: FlagSchema | None) -> Launcher | Issue:
    engine = catalog.engines()[t.engine]
    if not engine.multi_node:
        return Issue(f"templates[{t.name}].engine", f"{engine.display_name} here runs on one node only")
    if t.multi_node != "auto":
        chosen: Launcher = t.multi_node
    elif pool.vendor.multi_node_launcher is not None:
        chosen = pool.vendor.multi_node_launcher
    elif "native" in engine.multi_node and (schema is None or schema.lookup("--nnodes")):
        chosen = "native"
    else:
        chosen = "ray"
    if chosen not in engine.multi_node:
        return Issue(f"templates[{t.name}].multi_node", f"{engine.display_name} has no {chosen} launcher")
    if chosen == "native" and schema is not None and not schema.lookup("--nnodes"):
        native = [v for v in available_versions(t.engine) if load_schema(t.engine, v).lookup("--nnodes")]
        ray = "set multi_node: ray, or " if "ray" in engine.multi_node else ""
        pin = f"pin engine_version {' or '.join(native)}" if native else "pin a version that has it"
        return Issue(
            f"templates[{t.name}].multi_node",
            f"{engine.display_name} {t.engine_version} has no native multi-node launcher (no --nnodes "
            f"among its flags); {ray}{pin}",
        )
    return chosen


def _quirk_args(pool: PoolFacts, engine: str, tensor: int) -> list[tuple[str, list[str], str]]:
    out = []
    for q in pool.vendor.quirks:
        w = q.when
        if q.engine != engine:
            continue
        if w.family is not None and w.family != pool.family:
            continue
        if w.sharing is not None and w.sharing != pool.spec.sharing:
            continue
        if w.min_tensor_parallel is not None and tensor < w.min_tensor_parallel:
            continue
        for key, tokens in _groups_of(q.args).items():
            out.append((key, tokens, q.why))
    return out


def _merge(
    owned: dict[str, list[str]],
    defaults: Sequence[str],
    extras: Sequence[str],
    quirks: list[tuple[str, list[str], str]],
    where: dict[str, str],
) -> tuple[list[str], list[Issue]]:
    issues: list[Issue] = []
    chosen: dict[str, list[str]] = {}
    for source, tokens in (("defaults", defaults), ("extras", extras)):
        for key, group in _groups_of(tuple(tokens)).items():
            if key == "":
                issues.append(Issue(where[source], f"stray value(s) {group} before any flag"))
            elif key in owned:
                issues.append(
                    Issue(
                        where[source],
                        f"{key} is set by the platform; use the serving's fields instead",
                    )
                )
            else:
                chosen[key] = group  # extras come second: the user's value wins
    for key, group, why in quirks:
        current = owned.get(key) or chosen.get(key)
        if current is not None and current != group:
            issues.append(
                Issue(where["extras"], f"{' '.join(current)} conflicts with {' '.join(group)}: {why}")
            )
        elif current is None:
            chosen[key] = group
    return [token for group in chosen.values() for token in group], issues


@dataclass(frozen=True, slots=True)
class LaunchSetup:
    """What a launch takes from its template and pool alone (and the placement's shape): the same
    for every serving placed with them, so a fleet works it out once per combination, not per
    placement (`engine_launch`'s `setups`)."""

    image: str
    schema: FlagSchema | None
    launcher: Launcher | None
    port: int
    template_name: str
    entrypoint: tuple[str, ...]
    owned: dict[str, list[str]]  # the platform's flags, each owned even where a template omits it
    quirks: list[tuple[str, list[str], str]]
    context: dict[str, Any]  # the template context's template- and pool-wide part
    env: dict[str, str]  # vendor, network, Ray and template env, in that order (later wins)
    field_env: dict[str, str]
    health_path: str | None
    defaults_path: str


# (template, pool, multi-node, tensor parallel): what a LaunchSetup depends on besides the fleet
SetupKey = tuple[str, str, bool, int]


def launch_setup(t: DeployTemplate, pool: PoolFacts, multi_node: bool, tensor: int) -> LaunchSetup:
    """Raises SpecError/FlagError for what no serving on this template and pool could fix."""
    engine = catalog.engines()[t.engine]
    image = pick_image(t, pool)
    if isinstance(image, Issue):
        raise SpecError([image])
    schema: FlagSchema | None = None
    if t.validate_flags:
        try:
            schema = load_schema(t.runtime or t.engine, t.engine_version)
        except FlagError as exc:
            raise FlagError(
                [Issue(f"templates[{t.name}].engine_version", i.message) for i in exc.issues]
            ) from exc
    launcher: Launcher | None = None
    if multi_node:
        chosen = pick_launcher(t, pool, schema)
        if isinstance(chosen, Issue):
            raise SpecError([chosen])
        launcher = chosen
    port = t.port or engine.default_port
    env = {**pool.vendor.env}
    if multi_node:
        env.update(network.env(pool, pool.vendor.multi_node_env))
    if launcher == "ray":
        env.update(pool.vendor.ray_env)
    env.update(t.env)
    context = {
        "engine": t.engine,
        "engine_version": t.engine_version,
        "vendor": pool.spec.vendor,
        "family": pool.family,
        "host": "0.0.0.0",
        "port": port,
        "launcher": launcher,
        "leader_address": LEADER_ADDRESS,
        "worker_index": WORKER_INDEX,
        "rendezvous_port": engine.rendezvous_port,
    }
    return LaunchSetup(
        image=image,
        schema=schema,
        launcher=launcher,
        port=port,
        template_name=render.engine_template(t.engine, pool.spec.vendor, t.runtime),
        entrypoint=tuple(t.entrypoint or engine.entrypoint),
        owned={flag: [] for flag in engine.platform_flags},
        quirks=_quirk_args(pool, t.engine, tensor),
        context=context,
        env=env,
        field_env=dict(pool.vendor.field_env) if multi_node else {},
        health_path=t.probes.path or engine.health_path,
        defaults_path=f"templates[{t.name}].args",
    )


@cache
def _device_ids(devices: int) -> str:
    return ",".join(str(i) for i in range(devices))


def _context(
    setup: LaunchSetup, fleet: Fleet, s: ModelServing, plan: PlacementPlan, t: DeployTemplate
) -> dict[str, Any]:
    model = fleet.models[s.name]
    context = dict(setup.context)
    context.update(
        model_path=f"{t.model_mount_path}/{model.id}",
        served_name=s.served_name,
        tensor=plan.tensor,
        pipeline=plan.pipeline,
        data=plan.data,
        nodes=plan.nodes,
        devices=plan.devices_per_pod,
        device_ids=_device_ids(plan.devices_per_pod),
        max_model_len=s.max_model_len,
        dtype=s.dtype,
        quantization=capability.quantization_flag(model, s, fleet.pools[plan.pool], t),
        memory_utilization=plan.memory_utilization,
        kind=model.kind,
        vision="vision" in model.capabilities,
        mm_limits=_mm_limits(s),
    )
    return context


def _mm_limits(s: ModelServing) -> str | None:
    """--limit-mm-per-prompt's JSON, compact as vLLM's own examples write it."""
    if not s.multimodal_limits:
        return None
    return json.dumps(dict(sorted(s.multimodal_limits.items())), separators=(",", ":"))


@cache
def ray_join() -> str:
    """A Ray worker's script: wait (bounded) for the leader's head to answer, then join it.

    Started alone, `ray start --address` fails while the leader is still pulling its image, and the
    worker's restart recreates the whole group. `$$` is the kubelet's escape for a literal `$`."""
    head = f"{LEADER_ADDRESS}:{RAY_PORT}"
    return (
        f"i=0; until ray health-check --address={head} >/dev/null 2>&1; do i=$$((i+1)); "
        f'if [ "$i" -ge {RAY_WAIT_TRIES} ]; then echo "no Ray head at {head} after '
        f'{RAY_WAIT_TRIES * RAY_WAIT_SECONDS}s" >&2; exit 1; fi; sleep {RAY_WAIT_SECONDS}; done; '
        f"exec ray start --address={head} --block --disable-usage-stats"
    )


def engine_launch(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, setups: dict[SetupKey, LaunchSetup] | None = None
) -> EngineLaunch:
    """The containers' commands for one placement; raises FlagError/SpecError naming the path.
    `setups` keeps each template-and-pool setup for the next placement (one per fleet render)."""
    path = f"servings[{s.name}].placements[{plan.index}]"
    t = fleet.templates[s.template]
    multi_node = plan.nodes > 1
    key = (s.template, plan.pool, multi_node, plan.tensor)
    setup = setups.get(key) if setups is not None else None
    if setup is None:
        setup = launch_setup(t, fleet.pools[plan.pool], multi_node, plan.tensor)
        if setups is not None:
            setups[key] = setup
    launcher = setup.launcher
    context = _context(setup, fleet, s, plan, t)
    roles: dict[Role, RoleCommand] = {}
    issues: list[Issue] = []
    for role in ("leader", "worker") if multi_node else ("single",):
        if role == "worker" and launcher == "ray":
            roles[role] = RoleCommand(("/bin/sh", "-c"), (ray_join(),), ())
            continue
        context["role"] = role  # set per role: each render is over before the next role is set
        rendered = render.render_argv(setup.template_name, context, path)
        extra: list[str] = []
        merge_issues: list[Issue] = []
        if t.args or s.extra_args or setup.quirks:  # else nothing to merge: no need to group
            where = {"defaults": setup.defaults_path, "extras": f"servings[{s.name}].extra_args"}
            # Platform flags a template left out (tensor parallel 1) are still not the user's to set.
            owned = dict(setup.owned)
            owned.update(_groups(rendered))
            extra, merge_issues = _merge(owned, t.args, s.extra_args, setup.quirks, where)
        argv = rendered + extra
        if setup.schema is not None:
            merge_issues += validate_args(setup.schema, argv, path)
        if merge_issues:
            issues += merge_issues
            continue
        if launcher == "ray":
            # Ray's head must run before `vllm serve` in the same container: the one shell we need,
            # every value quoted.
            head = f"ray start --head --port={RAY_PORT} --disable-usage-stats"
            script = f"{head} && exec {shlex.join([*setup.entrypoint, *argv])}"
            roles[role] = RoleCommand(("/bin/sh", "-c"), (script,), tuple(argv))
        else:
            args = tuple(argv)
            roles[role] = RoleCommand(setup.entrypoint, args, args)
    if issues:
        raise FlagError(dict.fromkeys(issues))
    env = dict(setup.env)
    env.update(s.env)
    return EngineLaunch(
        engine=t.engine,
        engine_version=t.engine_version,
        image=setup.image,
        port=setup.port,
        health_path=setup.health_path,
        launcher=launcher,
        env=env,
        field_env=dict(setup.field_env),
        roles=roles,
        flags_checked=setup.schema is not None,
    )
