"""Running the rules without the Pulumi engine: over a rendering, and on a deploy request.

`check_rendering` applies every resource rule to every rendered object and every stack rule to the
whole set (providers are the components' business, so `explicit-provider` is left to the pack).
`preflight` is what the portal calls before it writes anything: the serving is validated against the
stack (spec, cross-references), planned with everything else on the pools, rendered (engine flags
checked), and its objects go through the same rules the policy pack runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from fleet.errors import Issue, IssuesError, PlanError, SpecError
from fleet.pipeline import Rendering, render_fleet
from fleet.planner import PlacementPlan, plan_fleet
from fleet.rules import pods, resource, stack
from fleet.rules.base import RULES, Finding, Level, level, section, settings
from fleet.spec import ModelServing
from fleet.stack import Fleet, build_fleet

OFFLINE_SKIP = frozenset({"explicit-provider"})


def _finding(rule: str, pack_config: Mapping[str, Any] | None, subject: str, message: str) -> Finding | None:
    chosen = level(pack_config, rule)
    if chosen == "disabled":
        return None
    lvl: Level = "mandatory" if chosen == "mandatory" else "advisory"
    return Finding(rule, lvl, subject, message)


def check_objects(
    objects: Sequence[tuple[str, pods.Obj]],
    config: Mapping[str, Any] | None = None,
    *,
    skip: Iterable[str] = OFFLINE_SKIP,
    servings: Iterable[str] | None = None,
) -> list[Finding]:
    """Every rule over (id, object) pairs; with `servings`, only findings that concern them."""
    skipped = set(skip)
    wanted = set(servings) if servings is not None else None
    out: list[Finding] = []
    for rule, check in resource.CHECKS.items():
        if rule in skipped:
            continue
        cfg = settings(rule, section(config, rule))
        for ident, obj in objects:
            serving = pods.labels(obj).get(f"{pods.LABEL}/serving")
            if wanted is not None and serving not in wanted:
                continue
            for message in check(obj, cfg):
                found = _finding(rule, config, ident, message)
                if found is not None:
                    out.append(found)
    graph = [stack.StackResource(ident, _type(obj), obj, f"{ident}::provider") for ident, obj in objects]
    for rule, stack_check in stack.CHECKS.items():
        if rule in skipped:
            continue
        for msg in stack_check(graph, settings(rule, section(config, rule))):
            if wanted is not None and not msg.servings & wanted:
                continue
            found = _finding(rule, config, msg.urn or "stack", msg.message)
            if found is not None:
                out.append(found)
    return sorted(out, key=lambda f: (not f.blocking, f.rule, f.subject))


def _type(obj: pods.Obj) -> str:
    return f"kubernetes:{pods.at(obj, 'apiVersion')}:{pods.kind(obj)}"


def object_id(region: str, obj: pods.Obj) -> str:
    """How findings name a rendered object: `region/Kind/namespace/name`."""
    meta = pods.mapping(obj.get("metadata"))
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{region}/{pods.kind(obj)}/{ns}{meta.get('name')}"


def rendered_objects(rendering: Rendering) -> list[tuple[str, pods.Obj]]:
    """(id, object) for every rendered object (see `object_id`)."""
    return [(object_id(region, obj), obj) for region, obj in rendering.objects()]


def check_rendering(
    rendering: Rendering,
    config: Mapping[str, Any] | None = None,
    *,
    servings: Iterable[str] | None = None,
) -> list[Finding]:
    findings = plan_findings(rendering.fleet, rendering.plan.placements, servings)
    return findings + check_objects(rendered_objects(rendering), config, servings=servings)


def plan_findings(
    fleet: Fleet, placements: Iterable[PlacementPlan], servings: Iterable[str] | None = None
) -> list[Finding]:
    """The parallelism and memory invariants, straight from the plan."""
    wanted = set(servings) if servings is not None else None
    out: list[Finding] = []
    for p in placements:
        if wanted is not None and p.serving not in wanted:
            continue
        where = f"servings[{p.serving}].placements[{p.index}]"
        per_node = fleet.pools[p.pool].spec.devices_per_node
        messages: list[str] = []
        if p.tensor * p.pipeline * p.data != p.devices_per_replica:
            messages.append(
                f"tensor {p.tensor} x pipeline {p.pipeline} x data {p.data} is not the replica's "
                f"{p.devices_per_replica} devices; fix the serving's parallelism"
            )
        across = p.nodes > 1 and p.tensor % p.devices_per_pod == 0 and p.devices_per_pod == per_node
        if per_node % p.tensor and not across:
            messages.append(
                f"tensor parallel {p.tensor} does not divide the {per_node} devices per node of pool "
                f"{p.pool}; pick a divisor of {per_node}"
            )
        if not p.memory.fits:
            messages.append(
                f"needs {p.memory.required_gib:.1f} GiB but {p.memory.budget_gib:.1f} GiB fit on "
                f"{p.devices_per_replica} devices; use more devices or quantize"
            )
        out += [Finding("parallelism-layout", "mandatory", where, f"{where}: {m}") for m in messages]
    return out


def _issues(rule: str, issues: Iterable[Issue]) -> list[Finding]:
    return [Finding(rule, "mandatory", i.path, str(i)) for i in issues]


def _relevant(issues: Sequence[Issue], prefixes: Sequence[str]) -> list[Issue]:
    mine = [i for i in issues if i.path.startswith(tuple(prefixes))]
    return mine or list(issues)  # the stack itself is broken: say everything


def _serving_name(serving: Mapping[str, Any] | ModelServing) -> str:
    if isinstance(serving, ModelServing):
        return serving.name
    name = serving.get("name") if isinstance(serving, Mapping) else None
    return name if isinstance(name, str) and name else "new"


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def stack_data(fleet: Fleet) -> dict[str, Any]:
    """The stack's config sections back as plain data (what `build_fleet` takes)."""
    return {
        "platform": _dump(fleet.platform),
        "regions": [_dump(r) for r in fleet.regions.values()],
        "pools": [_dump(p.spec) for p in fleet.pools.values()],
        "templates": [_dump(t) for t in fleet.templates.values()],
    }


def preflight(
    fleet: Fleet,
    serving: Mapping[str, Any] | ModelServing,
    config: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Everything wrong with deploying `serving` (new, or replacing the one of the same name) onto
    `fleet`, mandatory findings first; an empty list or only advisories means go.

    `serving` is what the portal received (raw data, as a serving file holds) or an already
    validated `ModelServing`; `config` is the stack's policy-pack config. The stack is rebuilt with
    the serving in it through `build_fleet`, so the checks are exactly those `pulumi up` would run.
    """
    name = _serving_name(serving)
    path = f"servings[{name}]"
    raw = _dump(serving) if isinstance(serving, ModelServing) else serving
    others = [(f"servings[{s.name}]", _dump(s)) for s in fleet.servings if s.name != name]
    try:
        candidate = build_fleet(fleet.stack, stack_data(fleet), [*others, (path, raw)])
    except SpecError as exc:
        return _issues("spec", _relevant(exc.issues, [path]))
    pools = [f"pools[{p.pool}]" for p in candidate.servings[-1].placements]
    try:
        plan = plan_fleet(candidate)
    except PlanError as exc:
        return _issues("plan", _relevant(exc.issues, [path, *pools]))
    template = candidate.servings[-1].template
    try:
        rendering = render_fleet(candidate, plan)
    except IssuesError as exc:
        return _issues(exc.kind, _relevant(exc.issues, [path, f"templates[{template}]"]))
    return check_rendering(rendering, config, servings=[name])


__all__ = [
    "RULES",
    "check_objects",
    "check_rendering",
    "object_id",
    "plan_findings",
    "preflight",
    "rendered_objects",
    "stack_data",
]
