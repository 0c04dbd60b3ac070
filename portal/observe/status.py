"""What a serving is observed doing, read back from the rows the observers write.

A serving has one placement row per region × pool; each carries its observed state (summarised from
its replicas by the recorder). `overall` sums the placements up the same way the recorder sums
replicas: `ready` when every placement that should run is ready, `degraded` when some serve,
`failed` when nothing serves and something failed, else the furthest start-up phase reached;
`committed` while no observer has reported anything (never a state that was not observed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from portal.observe.states import PROGRESS, State
from store.models import ServingPlacement, ServingReplica

# Replicas that hold their devices: scheduled (pulling the image, fetching weights, loading) or serving.
# A pending replica is not scheduled yet; a failed or stopped one is not counted (it is being
# restarted or gone, and the cluster's own accounting is the authority on what it still holds).
HOLDING = frozenset({State.PULLING, State.DOWNLOADING, State.LOADING, State.READY})
# What the console calls "starting": every start-up phase.
STARTING = frozenset(PROGRESS)


@dataclass(frozen=True, slots=True)
class Overall:
    state: State
    reason: str | None
    message: str | None
    since: datetime | None
    ready: int
    desired: int


def _running(p: ServingPlacement) -> bool:
    return p.desired_replicas > 0 or p.state != State.STOPPED


def overall(placements: Sequence[ServingPlacement]) -> Overall:
    ready = sum(p.ready_replicas for p in placements)
    desired = sum(p.desired_replicas for p in placements)

    def of(state: State, p: ServingPlacement | None = None) -> Overall:
        if p is None:
            return Overall(state, None, None, None, ready, desired)
        return Overall(state, p.reason, p.message, p.state_since, ready, desired)

    if not placements:
        return of(State.COMMITTED)
    relevant = [p for p in placements if _running(p)]
    if not relevant:
        return of(State.STOPPED, max(placements, key=lambda p: p.state_since))
    states = [State(p.state) for p in relevant]
    first = {s: p for s, p in zip(reversed(states), reversed(relevant), strict=True)}
    if all(s is State.READY for s in states):
        return of(State.READY, max(relevant, key=lambda p: p.state_since))
    not_ready = next((p for p in relevant if p.state != State.READY), None)
    if any(s in (State.READY, State.DEGRADED) for s in states):
        return of(State.DEGRADED, first.get(State.FAILED) or first.get(State.DEGRADED) or not_ready)
    if State.FAILED in first:
        return of(State.FAILED, first[State.FAILED])
    starting = [s for s in states if s in STARTING]
    if starting:
        furthest = max(starting, key=PROGRESS.index)
        return of(furthest, first[furthest])
    if all(s is State.STOPPED for s in states):
        return of(State.STOPPED, relevant[0])
    return of(State.COMMITTED)


def placements_of(
    session: Session, stack: str, workspace: str, names: Collection[str] | None = None
) -> dict[str, list[ServingPlacement]]:
    """The workspace's placement rows (with their replicas) by serving, in placement order."""
    query = (
        select(ServingPlacement)
        .where(ServingPlacement.stack == stack, ServingPlacement.workspace == workspace)
        .options(selectinload(ServingPlacement.replicas))
        .order_by(ServingPlacement.serving, ServingPlacement.position, ServingPlacement.id)
    )
    if names is not None:
        query = query.where(ServingPlacement.serving.in_(list(names)))
    out: dict[str, list[ServingPlacement]] = defaultdict(list)
    for row in session.scalars(query):
        out[row.serving].append(row)
    return dict(out)


def devices_in_use(session: Session, stack: str) -> dict[tuple[str, str], int]:
    """Devices the replicas of each (region, pool) hold now: nodes × devices per node of each
    replica that is scheduled or serving."""
    rows = session.execute(
        select(ServingPlacement.region, ServingPlacement.pool, ServingPlacement.launch, ServingReplica.state)
        .join(ServingReplica, ServingReplica.placement_id == ServingPlacement.id)
        .where(ServingPlacement.stack == stack)
    )
    used: dict[tuple[str, str], int] = defaultdict(int)
    for region, pool, launch, state in rows:
        if state in HOLDING:
            per_node = int((launch or {}).get("devices") or 0)
            used[(region, pool)] += per_node * max(1, int((launch or {}).get("nodes") or 1))
    return dict(used)
