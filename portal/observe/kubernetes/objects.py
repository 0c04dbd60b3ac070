"""Reading raw Kubernetes API objects (the JSON the API server sends, as dicts): names, labels,
conditions, times, and the labels our manifests put on every object (`fleet.manifests.labels`).

The observer works on plain dicts rather than typed models: it reads a handful of fields of each
object, the objects arrive as JSON lines anyway, and the derivation stays a pure function of JSON
that tests can write down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fleet.manifests import LABEL

Obj = Mapping[str, Any]

# Labels our manifests put on workloads and pods (fleet/manifests.py `labels`, `selector_labels`).
MANAGED_BY = "app.kubernetes.io/managed-by"
SERVING = f"{LABEL}/serving"
REGION = f"{LABEL}/region"
POOL = f"{LABEL}/pool"
ROLE = f"{LABEL}/role"

# Labels the LeaderWorkerSet controller puts on the pods of a group.
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"

# Container names our pod template uses (fleet/manifests.py `_pod_spec`, `_fetch_container`).
ENGINE = "engine"
MODEL_FETCH = "model-fetch"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def metadata(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def name(obj: Obj) -> str:
    return str(metadata(obj).get("name", ""))


def uid(obj: Obj) -> str | None:
    value = metadata(obj).get("uid")
    return str(value) if value else None


def labels(obj: Obj) -> Mapping[str, str]:
    found: Mapping[str, str] = metadata(obj).get("labels") or {}
    return found


def resource_version(obj: Obj) -> str | None:
    value = metadata(obj).get("resourceVersion")
    return str(value) if value else None


def placement_key(obj: Obj) -> tuple[str, str] | None:
    """(serving, pool) of one of our objects, from its labels; None for anything else."""
    found = labels(obj)
    serving, pool = found.get(SERVING), found.get(POOL)
    if not serving or not pool:
        return None
    return serving, pool


def condition(obj: Obj, kind: str) -> Mapping[str, Any] | None:
    """The status condition of type `kind`, if the object reports one."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            found: Mapping[str, Any] = cond
            return found
    return None


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it (`…Z`, with or without microseconds)."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def event_time(event: Obj) -> datetime:
    """When an event (core/v1) last happened: series, last timestamp, event time, first timestamp."""
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        metadata(event).get("creationTimestamp"),
    ):
        when = parse_time(value)
        if when is not None:
            return when
    return EPOCH


def involved(event: Obj) -> Mapping[str, Any]:
    """The object an event is about (core/v1 `involvedObject`, events.k8s.io/v1 `regarding`)."""
    about: Mapping[str, Any] = event.get("involvedObject") or event.get("regarding") or {}
    return about


def event_message(event: Obj) -> str:
    return str(event.get("message") or event.get("note") or "").strip()


def events_about(events: Iterable[Obj], kind: str, obj: Obj) -> list[Obj]:
    """The events about `obj` (of `kind`), oldest first; an event about an earlier object of the same
    name (a LeaderWorkerSet pod recreated under its stable name) is left out by its uid."""
    wanted_name, wanted_uid = name(obj), uid(obj)
    mine = []
    for event in events:
        about = involved(event)
        if about.get("kind") != kind or about.get("name") != wanted_name:
            continue
        if wanted_uid and about.get("uid") and about.get("uid") != wanted_uid:
            continue
        mine.append(event)
    mine.sort(key=event_time)
    return mine
