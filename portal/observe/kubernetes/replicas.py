"""A placement's replicas from its current objects (pure): one per pod of a Deployment, one per
group of a LeaderWorkerSet (a leader and its workers: ready only when the whole group is).

The workload's own conditions add what no pod says: a Deployment whose rollout passed its progress
deadline (`Progressing=False, ProgressDeadlineExceeded`) turns its replicas that are not ready into
failures, and one that cannot create pods (`ReplicaFailure`, e.g. a quota) shows as a failed replica
named after the workload while pods are missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from portal.observe.kubernetes.objects import (
    LWS_GROUP,
    LWS_WORKER,
    Obj,
    condition,
    labels,
    metadata,
    name,
)
from portal.observe.kubernetes.pods import Logs, observe_pod
from portal.observe.states import ReplicaObservation, State

# How far a member is on its way to ready: a group is as far as its slowest member.
RANK = {
    State.STOPPED: 0,
    State.PENDING: 0,
    State.PULLING: 1,
    State.DOWNLOADING: 2,
    State.LOADING: 3,
    State.READY: 4,
}


@dataclass(frozen=True)
class PlacementObjects:
    """What the cluster holds of one placement: its workload (None when not applied or deleted), the
    pods with its labels, and events of the namespace (only those about these objects count)."""

    workload: Obj | None
    pods: Sequence[Obj] = ()
    events: Sequence[Obj] = ()
    logs: Logs = field(default_factory=dict)


def observe_placement(objects: PlacementObjects) -> list[ReplicaObservation]:
    workload = objects.workload
    if workload is not None and workload.get("kind") == "LeaderWorkerSet":
        return _groups(workload, objects)
    observed = [observe_pod(pod, objects.events, objects.logs) for pod in _by_name(objects.pods)]
    if workload is not None:
        observed = _deployment_conditions(workload, observed)
    return observed


def _by_name(pods: Iterable[Obj]) -> list[Obj]:
    return sorted(pods, key=name)


def _deployment_conditions(deployment: Obj, observed: list[ReplicaObservation]) -> list[ReplicaObservation]:
    progressing = condition(deployment, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        deadline = str(progressing.get("message") or "the rollout passed its progress deadline")
        observed = [
            replace(
                seen,
                state=State.FAILED,
                reason="ProgressDeadlineExceeded",
                message=f"{deadline}; {seen.message or seen.state.value}",
            )
            if seen.state in RANK and seen.state not in (State.READY, State.STOPPED)
            else seen
            for seen in observed
        ]
    failure = condition(deployment, "ReplicaFailure")
    desired = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
    live = [seen for seen in observed if seen.state is not State.STOPPED]
    if failure and failure.get("status") == "True" and len(live) < desired:
        observed.append(
            ReplicaObservation(
                name=name(deployment),
                state=State.FAILED,
                reason=str(failure.get("reason") or "FailedCreate"),
                message=str(failure.get("message") or "the Deployment cannot create its pods"),
            )
        )
    return observed


def _groups(lws: Obj, objects: PlacementObjects) -> list[ReplicaObservation]:
    template = (lws.get("spec") or {}).get("leaderWorkerTemplate") or {}
    size = int(template.get("size") or 1)
    members: dict[int, dict[int, Obj]] = defaultdict(dict)
    for pod in objects.pods:
        found = labels(pod)
        try:
            group, worker = int(found[LWS_GROUP]), int(found.get(LWS_WORKER, "0"))
        except (KeyError, ValueError):  # not (yet) labelled by the LeaderWorkerSet controller
            continue
        members[group][worker] = pod
    base = name(lws)
    return [_group(f"{base}-{group}", size, members[group], objects) for group in sorted(members)]


def _group(replica: str, size: int, pods: Mapping[int, Obj], objects: PlacementObjects) -> ReplicaObservation:
    seen = {index: observe_pod(pod, objects.events, objects.logs) for index, pod in sorted(pods.items())}
    restarts = sum(s.restarts for s in seen.values())
    details = {
        "size": size,
        "pods": {s.name: s.state.value for s in seen.values()},
        "leader": seen[0].name if 0 in seen else None,
    }
    if 0 in pods and metadata(pods[0]).get("deletionTimestamp") is None and seen[0].details.get("ip"):
        details["ip"] = seen[0].details["ip"]
    failed = [s for s in seen.values() if s.state is State.FAILED]
    if failed:  # the leader's failure first (indexes are sorted), else the first worker's
        worst = failed[0]
        return ReplicaObservation(
            name=replica,
            state=State.FAILED,
            reason=worst.reason,
            message=f"{worst.name}: {worst.message}",
            restarts=restarts,
            exit_code=worst.exit_code,
            details=details,
        )
    ready = sum(1 for s in seen.values() if s.state is State.READY)
    missing = size - len(seen)
    if ready == size:
        return ReplicaObservation(replica, State.READY, restarts=restarts, details=details)
    slowest = min(seen.values(), key=lambda s: RANK.get(s.state, 0)) if seen else None
    if missing > 0 or slowest is None:
        note = f"{missing} of {size} pods not created yet"
        state = State.PENDING
        reason: str | None = "GroupIncomplete"
    else:
        note = f"{slowest.name}: {slowest.message}" if slowest.message else slowest.name
        state = State.PENDING if slowest.state is State.STOPPED else slowest.state
        reason = slowest.reason
    return ReplicaObservation(
        name=replica,
        state=state,
        reason=reason,
        message=f"{ready} of {size} pods ready; {note}",
        restarts=restarts,
        details=details,
    )
