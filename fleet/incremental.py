"""Checking one serving change against an already-built stack, at the cost of that serving.

`fleet.rules.preflight` answers "what is wrong with deploying this serving?" by rebuilding, planning
and rendering the whole stack with the candidate in it: exact, and a few hundred milliseconds at a
thousand servings. Everything but the candidate is the same as in the committed stack, so a
`StackIndex` keeps the committed stack's plan and rendering, indexed, and `check_change` redoes only
the candidate's share of each step:

- spec: the candidate alone against the fleet's regions, pools and templates (`fleet.stack.check_serving`);
- plan: its placements (`plan_placement`); pool use is the committed use, minus what the serving it
  replaces used, plus what it asks for; a pool over capacity is refused with the planner's message;
- render: its engine launches and objects (`engine_launch`, `placement_objects`);
- rules: the resource rules on its objects, and the stack rules on its objects plus those of every
  serving it shares a group with (same served model name, same workspace under a device limit, same
  public model, autoscaler targets) — the only objects a stack rule's message about it can depend on.

The findings equal the full path's (tests/core/test_incremental.py compares both over generated
changes). A committed stack that does not plan or render has nothing to reuse: then the full path runs.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.engine_args import engine_launch
from fleet.errors import Issue, IssuesError, PlanError, RenderError
from fleet.gcpause import collector_paused
from fleet.manifests import endpoint, placement_objects
from fleet.pipeline import RenderedPlacement, Rendering, render_fleet
from fleet.planner import PlacementPlan, PoolUse, plan_placement
from fleet.rules import pods
from fleet.rules import resource as resource_rules
from fleet.rules import stack as stack_rules
from fleet.rules.base import Finding, level, per_workspace, section, settings
from fleet.rules.preflight import (
    OFFLINE_SKIP,
    _dump,
    _issues,
    _relevant,
    _serving_name,
    check_objects,
    object_id,
    plan_findings,
)
from fleet.rules.preflight import preflight as full_preflight
from fleet.spec import ModelServing
from fleet.stack import Fleet, ModelFacts, check_serving

Obj = pods.Obj
GroupKey = tuple[str, str]

# The groups each stack rule compares servings within. A stack rule missing here makes every change
# be checked against the whole stack (correct, only slower) until its groups are declared.
RULE_GROUPS: dict[str, tuple[str, ...]] = {
    "public-model-name": ("served",),
    "workspace-devices": ("workspace", "target"),
    "public-model-replicas": ("public", "target"),
}


def _group_keys(ident: str, obj: Obj) -> list[GroupKey]:
    """The groups an object belongs to, as the stack rules read them off the object."""
    if pods.kind(obj) == "ScaledObject":
        region = str(pods.labels(obj).get(f"{pods.LABEL}/region") or "")
        namespace = str(pods.at(obj, "metadata", "namespace") or "")
        target = str(pods.at(obj, "spec", "scaleTargetRef", "name") or "")
        return [("target", f"{region}/{namespace}/{target}")]
    found = stack_rules.workloads([stack_rules.StackResource(ident, "kubernetes:", obj, None)])
    if not found:
        return []
    w = found[0]
    namespace = pods.at(obj, "metadata", "namespace") or ""
    target = f"{w.region}/{namespace}/{pods.at(obj, 'metadata', 'name') or ''}"
    keys: list[GroupKey] = [("workspace", w.workspace), ("target", target)]
    served = pods.flag(w.engine_argv, pods.SERVED_NAME)
    if served:
        keys.append(("served", served))
    public = pods.annotation(obj, "public-model")
    if public:
        keys.append(("public", public))
    return keys


@dataclass(frozen=True)
class StackIndex:
    """A committed stack's plan and rendering, indexed by serving, pool and rule group."""

    fleet: Fleet
    rendering: Rendering | None  # None when the committed stack does not plan or render
    error: IssuesError | None = None  # why, then
    # (id, object) of every placement, in rendering order; positions of each serving's objects in it
    objects: tuple[tuple[str, Obj], ...] = ()
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # serving -> its rendered placements (what preview compares with)
    rendered: dict[str, tuple[RenderedPlacement, ...]] = field(default_factory=dict)
    # rule group -> the servings in it, and serving -> the groups it is in
    groups: dict[GroupKey, frozenset[str]] = field(default_factory=dict)
    keys: dict[str, frozenset[GroupKey]] = field(default_factory=dict)
    # pool -> devices the committed plan uses, the same with autoscalers at their maximum, and its
    # users as the planner lists them: (serving, "name RxD")
    used: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    users: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @functools.cached_property
    def servings(self) -> dict[str, ModelServing]:
        return {s.name: s for s in self.fleet.servings}


@collector_paused
def index_stack(fleet: Fleet, rendering: Rendering | None = None) -> StackIndex:
    """Plan and render `fleet` (unless `rendering` is given) and index the result."""
    if rendering is None:
        try:
            rendering = render_fleet(fleet)
        except IssuesError as exc:
            return StackIndex(fleet, None, exc)
    objects: list[tuple[str, Obj]] = []
    positions: dict[str, list[int]] = defaultdict(list)
    rendered: dict[str, list[RenderedPlacement]] = defaultdict(list)
    groups: dict[GroupKey, set[str]] = defaultdict(set)
    keys: dict[str, set[GroupKey]] = defaultdict(set)
    for placement in rendering.placements:
        name = placement.plan.serving
        rendered[name].append(placement)
        for obj in placement.objects:
            ident = object_id(placement.plan.region, obj)
            positions[name].append(len(objects))
            objects.append((ident, obj))
            for key in _group_keys(ident, obj):
                groups[key].add(name)
                keys[name].add(key)
    used: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    users: dict[str, list[tuple[str, str]]] = defaultdict(list)
    servings = {s.name: s for s in fleet.servings}
    for p in rendering.plan.placements:
        _account(servings[p.serving], p, used, peak, users)
    return StackIndex(
        fleet,
        rendering,
        None,
        tuple(objects),
        {k: tuple(v) for k, v in positions.items()},
        {k: tuple(v) for k, v in rendered.items()},
        {k: frozenset(v) for k, v in groups.items()},
        {k: frozenset(v) for k, v in keys.items()},
        dict(used),
        dict(peak),
        {k: tuple(v) for k, v in users.items()},
    )


def _account(
    s: ModelServing,
    p: PlacementPlan,
    used: dict[str, int],
    peak: dict[str, int],
    users: dict[str, list[tuple[str, str]]],
) -> None:
    """A placement's share of its pool, counted the way `plan_fleet` counts it."""
    used[p.pool] += p.replicas * p.devices_per_replica
    top = s.autoscaling.max_replicas if s.autoscaling else p.replicas
    peak[p.pool] += top * p.devices_per_replica
    if p.replicas:
        users[p.pool].append((s.name, f"{s.name} {p.replicas}x{p.devices_per_replica}"))


@dataclass(frozen=True)
class Change:
    """One serving change, checked: the findings (what `fleet.rules.preflight` reports) and, as far
    as it got, the validated serving, its plans, its pools' use after it and its rendered placements.

    `rendered` is None when the change cannot be rendered, and `error` says why; a change refused
    only for capacity is still rendered (a preview can show it)."""

    name: str
    findings: tuple[Finding, ...]
    serving: ModelServing | None = None
    model: ModelFacts | None = None
    plans: tuple[PlacementPlan, ...] = ()
    pools: dict[str, PoolUse] = field(default_factory=dict)
    rendered: tuple[RenderedPlacement, ...] | None = None
    error: IssuesError | None = None
    view: Fleet | None = None  # the stack as the candidate sees it (its model facts in `models`)

    @property
    def blocking(self) -> bool:
        return any(f.blocking for f in self.findings)


@collector_paused
def check_change(
    index: StackIndex,
    serving: Mapping[str, Any] | ModelServing,
    config: Mapping[str, Any] | None = None,
    *,
    rules: bool = True,
) -> Change:
    """What `fleet.rules.preflight(index.fleet, serving, config)` reports, for the cost of `serving`.

    `rules=False` stops after rendering (a preview needs the objects, not the policies): findings
    then hold only what stopped the spec, the plan or the rendering."""
    name = _serving_name(serving)
    if index.rendering is None:
        return Change(name, tuple(full_preflight(index.fleet, serving, config)), error=index.error)
    path = f"servings[{name}]"
    raw = _dump(serving) if isinstance(serving, ModelServing) else serving
    try:
        candidate, model = check_serving(index.fleet, path, raw)
    except IssuesError as exc:
        return Change(name, tuple(_issues(exc.kind, _relevant(exc.issues, [path]))), error=exc)
    # The candidate's view of the fleet: all that planning and rendering one serving read.
    f = index.fleet
    view = Fleet(f.stack, f.platform, f.regions, f.pools, f.templates, (candidate,), {candidate.name: model})
    plans, issues = _plan(view, candidate, path)
    pools, over = _pools(index, candidate, plans)
    issues += over
    relevant = [path, *(f"pools[{p.pool}]" for p in candidate.placements)]
    if len(plans) < len(candidate.placements):  # a placement cannot run at all: nothing to render
        findings = _issues(PlanError.kind, _relevant(issues, relevant))
        error = PlanError(issues)
        return Change(name, tuple(findings), candidate, model, tuple(plans), pools, None, error, view)
    rendered, render_issues = _render(view, candidate, plans)
    failed: IssuesError | None = RenderError(render_issues) if render_issues else None
    done = None if render_issues else tuple(rendered)
    if issues:  # over capacity: the planner refuses before anything is rendered
        findings = _issues(PlanError.kind, _relevant(issues, relevant))
    elif render_issues:
        where = [path, f"templates[{candidate.template}]"]
        findings = _issues(RenderError.kind, _relevant(render_issues, where))
    elif rules:
        findings = plan_findings(view, plans, [name])
        findings += _rule_findings(index, name, rendered, config)
    else:
        findings = []
    return Change(name, tuple(findings), candidate, model, tuple(plans), pools, done, failed, view)


def _plan(view: Fleet, s: ModelServing, path: str) -> tuple[list[PlacementPlan], list[Issue]]:
    plans: list[PlacementPlan] = []
    issues: list[Issue] = []
    for i in range(len(s.placements)):
        result = plan_placement(view, s, i, path)
        if isinstance(result, Issue):
            issues.append(result)
        else:
            plans.append(result)
    return plans, issues


def _pools(
    index: StackIndex, s: ModelServing, plans: list[PlacementPlan]
) -> tuple[dict[str, PoolUse], list[Issue]]:
    """The candidate's pools once it replaces its namesake, and the planner's refusal of any pool
    it overfills (its users listed as a full rebuild lists them: the candidate last)."""
    mine = {p.pool for p in s.placements if p.pool in index.fleet.pools}
    used = defaultdict(int, {pool: index.used.get(pool, 0) for pool in mine})
    peak = defaultdict(int, {pool: index.peak.get(pool, 0) for pool in mine})
    old = index.servings.get(s.name)
    if old is not None:
        for placement in index.rendered.get(s.name, ()):
            p = placement.plan
            used[p.pool] -= p.replicas * p.devices_per_replica
            peak[p.pool] -= (old.autoscaling.max_replicas if old.autoscaling else p.replicas) * (
                p.devices_per_replica
            )
    added: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for p in plans:
        _account(s, p, used, peak, added)
    out: dict[str, PoolUse] = {}
    issues: list[Issue] = []
    for name, pool in index.fleet.pools.items():  # in the stack's order, as the planner reports pools
        if name not in mine:
            continue
        use = PoolUse(name, pool.spec.region, pool.spec.devices, used[name], peak[name])
        out[name] = use
        if use.used > use.capacity:
            users = [label for serving, label in index.users.get(name, ()) if serving != s.name]
            users += [label for _, label in added[name]]
            issues.append(
                Issue(
                    f"pools[{name}]",
                    f"{use.capacity} devices but servings ask for {use.used} "
                    f"({', '.join(users)}): over by {use.used - use.capacity}",
                )
            )
    return out, issues


def _render(
    view: Fleet, s: ModelServing, plans: list[PlacementPlan]
) -> tuple[list[RenderedPlacement], list[Issue]]:
    """`render_fleet`'s loop, over the candidate's placements only."""
    rendered: list[RenderedPlacement] = []
    issues: list[Issue] = []
    for plan in plans:
        try:
            launch = engine_launch(view, s, plan)
        except IssuesError as exc:
            issues += [i for i in exc.issues if i not in issues]
            continue
        objects = tuple(placement_objects(view, s, plan, launch))
        rendered.append(RenderedPlacement(plan, launch, objects, endpoint(view, s, plan, launch)))
    return rendered, issues


def _enabled(config: Mapping[str, Any] | None, rule: str) -> bool:
    try:
        return level(config, rule) != "disabled"
    except ValueError:
        return True  # a bad level fails the check itself, as it would in the full path


def _rule_findings(
    index: StackIndex,
    name: str,
    rendered: list[RenderedPlacement],
    config: Mapping[str, Any] | None,
) -> list[Finding]:
    """`check_objects` over the whole stack, `servings=[name]`, from a few objects: the resource
    rules see the candidate's objects only (they judge one object at a time), and each stack rule
    sees the candidate's objects after those of every committed serving it shares one of the rule's
    groups with, in the committed order (which a full rebuild keeps).

    The result is in `check_objects`' order: it sorts its findings stably, resource rules before
    stack rules, so sorting the concatenation of the per-rule runs gives the same list."""
    mine = [(object_id(p.plan.region, obj), obj) for p in rendered for obj in p.objects]
    stack_checks = set(stack_rules.CHECKS)
    out = check_objects(mine, config, skip=OFFLINE_SKIP | stack_checks, servings=[name])
    groups = {ident: _group_keys(ident, obj) for ident, obj in mine}
    limits = pods.mapping(settings("workspace-devices", section(config, "workspace-devices"))["maxDevices"])
    for rule in stack_rules.CHECKS:
        if rule in OFFLINE_SKIP or not _enabled(config, rule):
            continue
        kinds = RULE_GROUPS.get(rule)
        if kinds is None:  # a rule without declared groups sees everything
            positions = [i for s, held in index.positions.items() if s != name for i in held]
        else:
            wanted = {
                key
                for keys in groups.values()
                for key in keys
                if key[0] in kinds
                # a workspace without a device limit has nothing for the rule to say
                and not (key[0] == "workspace" and per_workspace(limits, key[1]) is None)
            }
            positions = _positions(index, name, wanted)
        subset = [index.objects[i] for i in sorted(positions)] + mine
        others = set(resource_rules.CHECKS) | stack_checks - {rule}
        out += check_objects(subset, config, skip=others, servings=[name])
    return sorted(out, key=lambda f: (not f.blocking, f.rule, f.subject))


def _positions(index: StackIndex, name: str, wanted: set[GroupKey]) -> list[int]:
    """Positions of the objects of the committed servings (but `name`, which is replaced) in any of
    the `wanted` groups."""
    involved: set[str] = set()
    for key in wanted:
        involved |= index.groups.get(key, frozenset())
    # An autoscaler counts for the workload it targets, whichever serving it came with.
    for serving in list(involved):
        for key in index.keys.get(serving, frozenset()):
            if key[0] == "target":
                involved |= index.groups[key]
    involved.discard(name)
    return [i for s in involved for i in index.positions.get(s, ())]
