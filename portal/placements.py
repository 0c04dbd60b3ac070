"""Desired placements, published from git into `serving_placements` for the runtimes and the gateway.

The stacks in git say what should run; the data plane never reads git, and the region runtimes need
each placement's launch (argv, env, port, health path) without rendering. So after every change that
lands (a stack job, a merged pull request, a start) the control plane renders the stack once and
reconciles these rows: new placements are added as `committed`, changed ones get their new desired
shape (observed fields are kept: only the observers write them), and placements that left the stack
are removed. A serving of a stack that no longer renders keeps its rows (nothing new was committed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fleet.errors import IssuesError
from fleet.pipeline import RenderedPlacement
from fleet.stack import Fleet
from portal.services import Services
from store.db import transaction, utcnow
from store.models import ServingEvent, ServingPlacement

log = logging.getLogger("modelfleet.portal.placements")

Key = tuple[str, str, str]  # serving, region, pool


def launch_of(placed: RenderedPlacement) -> dict[str, Any]:
    """What a runtime needs to start one replica of a single-node placement (and what it runs)."""
    launch = placed.launch
    role = launch.roles.get("single") or launch.roles.get("leader")
    return {
        "engine": launch.engine,
        "engine_version": launch.engine_version,
        "image": launch.image,
        "port": launch.port,
        "health_path": launch.health_path,
        "command": list(role.command) if role else [],
        "args": list(role.args) if role else [],
        "env": dict(launch.env),
        "nodes": placed.plan.nodes,
        "devices": placed.plan.devices_per_pod,
    }


def desired_rows(
    stack: str, fleet: Fleet, placements: tuple[RenderedPlacement, ...]
) -> dict[Key, dict[str, Any]]:
    servings = {s.name: s for s in fleet.servings}
    out: dict[Key, dict[str, Any]] = {}
    for placed in placements:
        plan = placed.plan
        serving = servings[plan.serving]
        region = fleet.regions[plan.region]
        launch = launch_of(placed)
        if region.runtime == "local":  # whether the simulator stands in for the engine program
            launch["engines"] = region.local.engines if region.local else "auto"
        fields = {
            "stack": stack,
            "serving": plan.serving,
            "workspace": serving.workspace,
            "region": plan.region,
            "pool": plan.pool,
            "position": plan.index,
            "runtime": region.runtime,
            "public_name": serving.served_name,
            "endpoint": placed.endpoint,
            "desired_replicas": plan.replicas,
            "weight": serving.placements[plan.index].weight,
            "launch": launch,
        }
        digest = json.dumps([launch, plan.replicas], sort_keys=True).encode()
        fields["revision"] = hashlib.sha256(digest).hexdigest()[:16]
        out[(plan.serving, plan.region, plan.pool)] = fields
    return out


def reconcile(session: Session, stack: str, desired: dict[Key, dict[str, Any]]) -> int:
    """Make the stack's rows say `desired`; the number of rows added, changed or removed."""
    changed = 0
    existing = {
        (p.serving, p.region, p.pool): p
        for p in session.scalars(select(ServingPlacement).where(ServingPlacement.stack == stack))
    }
    now = utcnow()
    for key, fields in desired.items():
        row = existing.pop(key, None)
        if row is None:
            session.add(ServingPlacement(**fields, state="committed", state_since=now))
            _event(session, fields, "committed", "Committed", "the placement was committed to the stack")
            changed += 1
            continue
        if any(getattr(row, name) != value for name, value in fields.items()):
            for name, value in fields.items():
                setattr(row, name, value)
            changed += 1
    for row in existing.values():
        fields = {"stack": row.stack, "serving": row.serving, "workspace": row.workspace}
        _event(session, {**fields, "region": row.region, "pool": row.pool}, "deleted", "Deleted", None)
        session.execute(delete(ServingPlacement).where(ServingPlacement.id == row.id))
        changed += 1
    return changed


def _event(session: Session, fields: dict[str, Any], state: str, reason: str, message: str | None) -> None:
    session.add(
        ServingEvent(
            stack=fields["stack"],
            serving=fields["serving"],
            workspace=fields["workspace"],
            region=fields["region"],
            pool=fields["pool"],
            state=state,
            reason=reason,
            message=message,
        )
    )


def publish(services: Services, stack: str) -> int:
    """Render `stack` at HEAD and reconcile its placement rows (0 when nothing changed)."""
    try:
        snapshot = services.repository.snapshot(stack)
        rendering = snapshot.rendering
    except IssuesError as exc:
        log.warning("placements of stack %s not published: it does not render: %s", stack, exc)
        return 0
    desired = desired_rows(stack, snapshot.fleet, rendering.placements)
    with transaction(services.sessions) as session:
        return reconcile(session, stack, desired)


def publish_all(services: Services) -> int:
    return sum(publish(services, stack) for stack in services.repository.stacks())
