"""The observed-state vocabulary and how replica states sum up to a placement's state (pure).

A replica is one pod (or one LeaderWorkerSet group: ready only when its whole group is) on a cluster,
or one supervised process on a local region. Its state moves forward through the start-up phases
(`pending` → `pulling` → `downloading` → `loading` → `ready`) or ends in `failed`; the summary of a
placement is the truth a user sees: `ready` only when every desired replica answered its readiness
probe, `degraded` when some did, otherwise the furthest start-up phase any replica reached, or
`failed` when nothing is ready and something failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from store.vocabulary import PROGRESS, State

__all__ = ["PROGRESS", "ReplicaObservation", "State", "Summary", "summarise"]


@dataclass(frozen=True, slots=True)
class ReplicaObservation:
    """What an observer saw of one replica, at one moment."""

    name: str
    state: State
    reason: str | None = None  # a machine word: Unschedulable, ErrImagePull, CrashLoopBackOff, OOMKilled …
    message: str | None = None  # the cluster's (or the process's) own words, with log lines on failure
    url: str | None = None  # where the replica answers (local runtime); None: the placement's endpoint
    restarts: int = 0
    exit_code: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Summary:
    state: State
    ready: int
    reason: str | None
    message: str | None


def summarise(desired: int, replicas: Sequence[ReplicaObservation]) -> Summary:
    ready = sum(1 for r in replicas if r.state is State.READY)
    if desired == 0:
        live = [r for r in replicas if r.state is not State.STOPPED]
        if not live:
            return Summary(State.STOPPED, 0, "Stopped", None)
        # Stopping: "stopped" only once nothing runs; until then say what the live replicas do.
        still = summarise(len(live), live)
        return Summary(still.state, still.ready, "Stopping", f"{len(live)} replicas still running")
    if ready >= desired:
        return Summary(State.READY, ready, None, None)
    failed = [r for r in replicas if r.state is State.FAILED]
    if ready > 0:
        worst = failed[0] if failed else _furthest(replicas)
        message = f"{ready} of {desired} replicas ready"
        if worst is not None and worst.message:
            message += f"; {worst.name}: {worst.message}"
        return Summary(State.DEGRADED, ready, worst.reason if worst else None, message)
    if failed:
        return Summary(State.FAILED, 0, failed[0].reason, failed[0].message)
    furthest = _furthest(replicas)
    if furthest is None:
        return Summary(State.PENDING, 0, "NoReplicas", "no replica has been created yet")
    return Summary(furthest.state, 0, furthest.reason, furthest.message)


def _furthest(replicas: Sequence[ReplicaObservation]) -> ReplicaObservation | None:
    starting = [r for r in replicas if r.state in PROGRESS]
    if not starting:
        return None
    return max(starting, key=lambda r: PROGRESS.index(r.state))
