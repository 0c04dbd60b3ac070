"""Preflight: everything wrong with applying a serving change to a stack, before anything is queued.

Two sources of checks:

- the core's rules (spec, plan and capacity, engine flags, policies) through the incremental path
  (`fleet.incremental.check_change` on the snapshot's cached index): the findings of a full rebuild
  of the stack, for the cost of the one serving;
- the model store of every region the serving is placed in (`portal.modelstore`): the weights the
  pods will fetch are there (missing files block; a store the portal cannot ask is advice).

Nothing in a report names another workspace's servings (docs/portal/preflight-and-preview.md):
a name clash says the name is not available, a capacity refusal gives totals and the request's own
share (`private`).

The portal refuses a request whose report is blocking and keeps the report with it. `facts` carries
what the checks learnt: the plan of each placement, the pools' use after the change, the model and
its files (count and bytes) per region.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.errors import Issue, IssuesError
from fleet.incremental import Change, check_change
from fleet.planner import PlacementPlan
from fleet.spec import ModelServing
from portal import modelstore
from portal.files import availability
from portal.repository import StackSnapshot
from portal.services import Services
from store.models import MaasModel

NAME_TAKEN = "serving-name"
NAME_CLASH = "public-name"
MODEL_STORE = "model-store"
DEFAULT_WORKSPACE = ModelServing.model_fields["workspace"].default


@dataclass(frozen=True, slots=True)
class Check:
    rule: str
    level: str  # mandatory | advisory | info
    subject: str
    message: str

    @property
    def blocking(self) -> bool:
        return self.level == "mandatory"


@dataclass(frozen=True)
class PreflightReport:
    serving: str
    commit: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. model files found and their total size

    @property
    def blocking(self) -> bool:
        return any(c.blocking for c in self.checks)


def run(
    services: Services,
    snapshot: StackSnapshot,
    desired: dict[str, Any],
    *,
    model_store: bool = True,
    session: Session | None = None,
) -> PreflightReport:
    """Check `desired` (a serving file's content) as a new serving or a replacement of its namesake.

    `model_store=False` leaves the stores alone (no network), e.g. for a dry run of many requests.
    `session`: the caller's, when it holds one (on SQLite a second session would wait for its lock)."""
    name = str(desired.get("name", ""))
    taken = _taken_by_another_workspace(snapshot, desired) or _clashes_with_an_offering(
        services, snapshot.stack, desired, session
    )
    if taken is not None:
        return PreflightReport(name, snapshot.commit, [taken], {"stack": snapshot.stack})
    change = check_change(snapshot.index, desired, snapshot.policy_config)
    others = others_servings(snapshot, desired.get("workspace", DEFAULT_WORKSPACE))
    checks = [
        Check(
            f.rule, f.level, private(f.subject, change, others), private(f.message, change, others, f.subject)
        )
        for f in change.findings
    ]
    facts = _facts(snapshot, change)
    if model_store and change.serving is not None and change.view is not None:
        regions = [p.region for p in change.serving.placements]
        stores = modelstore.check_model_store(services.settings, change.view, change.serving, regions)
        found_missing = [c.region for c in stores if c.status == "missing"]
        # A catalog model's folder is where `portal.files` copies it (an explicit uri is the serving's own).
        catalog_model = isinstance(change.serving.model, str) and change.serving.name in change.view.models
        model_id = change.view.models[change.serving.name].id if catalog_model else None
        downloads = _download_notes(services, session, snapshot.stack, model_id, found_missing)
        simulated = {
            r for r in regions if (local := change.view.regions[r].local) and local.engines == "simulate"
        }
        checks += [
            Check(MODEL_STORE, f.level, f.subject, _with_note(f.message, f.subject, downloads))
            for f in modelstore.findings(stores, simulated)
        ]
        facts["model_store"] = {c.region: c.fact() for c in stores}
        found = next((c for c in stores if c.files), None)
        if found is not None:
            facts["model_files"] = found.files
            facts["model_bytes"] = found.bytes
    checks.sort(key=lambda c: not c.blocking)  # stable: blocking first, each source's order kept
    return PreflightReport(name, snapshot.commit, checks, facts)


def _download_notes(
    services: Services, session: Session | None, stack: str, model_id: str | None, regions: list[str]
) -> dict[str, str]:
    """How far a requested copy of the model's files into each region is (`portal.files`)."""
    if model_id is None or not regions:
        return {}
    with nullcontext(session) if session is not None else services.sessions() as reading:
        began = not reading.in_transaction()
        found = availability.notes(reading, stack, model_id, regions)
        if began:
            reading.commit()
    return found


def _with_note(message: str, subject: str, notes: dict[str, str]) -> str:
    region = subject.removeprefix("regions[").partition("]")[0]
    return f"{message}; {notes[region]}" if region in notes else message


def _taken_by_another_workspace(snapshot: StackSnapshot, desired: dict[str, Any]) -> Check | None:
    """A serving name belongs to one workspace: a request from another may not replace (or look
    at) it. The message does not say whose it is."""
    name = desired.get("name")
    current = snapshot.index.servings.get(name) if isinstance(name, str) else None
    if current is None or current.workspace == desired.get("workspace", DEFAULT_WORKSPACE):
        return None
    return Check(
        NAME_TAKEN,
        "mandatory",
        f"servings[{name}].name",
        f"servings[{name}].name: {NAME_UNAVAILABLE.format(name=name)}",
    )


def _clashes_with_an_offering(
    services: Services, stack: str, desired: dict[str, Any], session: Session | None
) -> Check | None:
    """A workspace's serving is callable by its public model name; an offering (MaaS model) visible to
    the workspace under the same name would make that name mean two things, so the serving may not take
    it. An offering made from this very serving (the demo's) is the same model, not a clash."""
    name = desired.get("name")
    public = desired.get("public_model_name") or name
    if not isinstance(name, str) or not isinstance(public, str):
        return None
    workspace = desired.get("workspace", DEFAULT_WORKSPACE)
    with nullcontext(session) if session is not None else services.sessions() as reading:
        began = not reading.in_transaction()
        offering = reading.scalar(select(MaasModel).where(MaasModel.public_id == public))
        clash = (
            offering is not None
            and (offering.visibility == "all" or workspace in (offering.visible_workspaces or []))
            and not any(
                t.kind == "serving" and (t.stack, t.serving) == (stack, name) for t in offering.targets
            )
        )
        if began:  # leave the caller's session as it was: its own transaction comes next
            reading.commit()
    if not clash:
        return None
    where = "public_model_name" if desired.get("public_model_name") else "name"
    return Check(
        NAME_CLASH,
        "mandatory",
        f"servings[{name}].{where}",
        f"servings[{name}].{where}: {public!r} is already the name of a model offered to your workspace; "
        "choose another public model name",
    )


NAME_UNAVAILABLE = "the name {name!r} is not available in this stack; choose another"
# The core's capacity refusal lists every serving on the pool with its size ("qwen 2x8, chat 1x8"):
# right for ops running `python -m fleet`, but a workspace user must not learn other workspaces'
# servings from it, so the portal answers with totals and the request's own share.
_OVER_CAPACITY = re.compile(
    r"^(?P<head>.*?)(?P<capacity>\d+) devices but servings ask for (?P<used>\d+) \(.*\): "
    r"over by (?P<over>\d+)$",
    re.DOTALL,
)


def others_servings(snapshot: StackSnapshot, workspace: str) -> frozenset[str]:
    """Names of the stack's servings that belong to other workspaces than `workspace`."""
    return frozenset(n for n, s in snapshot.index.servings.items() if s.workspace != workspace)


def private(text: str, change: Change, others: frozenset[str] = frozenset(), subject: str = "") -> str:
    """`text` (a check's subject or message) without other workspaces' servings: their names become
    "another workspace's serving", and a capacity refusal gives totals and this request's share."""
    match = _OVER_CAPACITY.match(text)
    if match is not None and subject.startswith("pools["):
        pool = subject.removeprefix("pools[").split("]", 1)[0]
        mine = sum(p.replicas * p.devices_per_replica for p in change.plans if p.pool == pool)
        text = (
            f"{match['head']}{match['capacity']} devices but servings ask for {match['used']} in all, "
            f"{mine} of them for this serving: over by {match['over']}"
        )
    for name in others:
        if name in text:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", "another workspace's serving", text)
    return text


def private_error(error: IssuesError, change: Change, others: frozenset[str]) -> IssuesError:
    """The same error with each issue made `private`."""
    issues = [
        Issue(private(i.path, change, others), private(i.message, change, others, i.path))
        for i in error.issues
    ]
    return type(error)(issues)


def _placement_fact(p: PlacementPlan) -> dict[str, Any]:
    m = p.memory
    return {
        "region": p.region,
        "pool": p.pool,
        "replicas": p.replicas,
        "parallelism": {"tensor": p.tensor, "pipeline": p.pipeline, "data": p.data, "chosen": p.chosen},
        "nodes_per_replica": p.nodes,
        "devices_per_replica": p.devices_per_replica,
        "devices": p.replicas * p.devices_per_replica,
        "max_model_len": p.max_model_len,
        "memory_gib": {
            "weights": round(m.weights_gib, 2),
            "kv_cache": round(m.kv_cache_gib, 2) if m.kv_cache_gib is not None else None,
            "overhead": round(m.overhead_gib, 2),
            "required": round(m.required_gib, 2),
            "budget": round(m.budget_gib, 2),
        },
    }


def _facts(snapshot: StackSnapshot, change: Change) -> dict[str, Any]:
    facts: dict[str, Any] = {"stack": snapshot.stack}
    if change.serving is not None:
        facts["action"] = "update" if change.name in snapshot.index.servings else "create"
    if change.model is not None:
        m = change.model
        facts["model"] = {"id": m.id, "params_b": m.params_b, "dtype": m.dtype, "source": m.uri}
    if change.plans:
        facts["placements"] = [_placement_fact(p) for p in change.plans]
    if change.pools:
        facts["pools"] = {
            name: {"capacity": u.capacity, "used": u.used, "free": u.free, "peak": u.peak}
            for name, u in change.pools.items()
        }
    return facts
