"""The current objects of one region's namespace, as the watches last told, grouped by placement.

Every change says which placements it touched (their (serving, pool) keys, from the objects'
labels), so the watcher derives and records only those. An event touches the placement of the pod
it is about; an event that arrives before its pod is kept and counts once the pod is seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from portal.observe.kubernetes.kinds import DEPLOYMENTS, EVENTS, LEADER_WORKER_SETS, PODS, Kind
from portal.observe.kubernetes.listwatch import Changed, Relisted
from portal.observe.kubernetes.objects import Obj, involved, metadata, name, placement_key
from portal.observe.kubernetes.replicas import PlacementObjects

Key = tuple[str, str]  # serving, pool
MAX_EVENTS_PER_POD = 50


class Inventory:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Obj]] = {
            k.plural: {} for k in (DEPLOYMENTS, LEADER_WORKER_SETS, PODS)
        }
        self.members: dict[Key, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.events: dict[str, dict[str, Obj]] = defaultdict(dict)  # pod name → event name → event

    def take(self, kind: Kind, change: Relisted | Changed) -> set[Key]:
        """Apply a watch's news; the placements it touched."""
        if isinstance(change, Relisted):
            return self._replace(kind, change.objects)
        deleted = change.type == "DELETED"
        if kind is EVENTS:
            return self._event(change.object, deleted)
        return self._object(kind, change.object, deleted)

    def keys(self) -> set[Key]:
        return {key for key, kinds in self.members.items() if any(kinds.values())}

    def placement(self, key: Key) -> PlacementObjects:
        kinds = self.members.get(key, {})
        workloads = [
            self.objects[kind.plural][n]
            for kind in (DEPLOYMENTS, LEADER_WORKER_SETS)
            for n in kinds.get(kind.plural, ())
        ]
        # A placement that moved between one node and several has both for a while: the newer counts.
        workload = (
            max(workloads, key=lambda w: str(metadata(w).get("creationTimestamp", ""))) if workloads else None
        )
        pods = [self.objects[PODS.plural][n] for n in sorted(kinds.get(PODS.plural, ()))]
        events = [e for pod in pods for e in self.events.get(name(pod), {}).values()]
        return PlacementObjects(workload, pods, events)

    def pods(self, keys: Iterable[Key]) -> list[Obj]:
        return [
            self.objects[PODS.plural][n]
            for key in keys
            for n in self.members.get(key, {}).get(PODS.plural, ())
        ]

    # -- applying changes -------------------------------------------------------------------------

    def _replace(self, kind: Kind, objects: list[Obj]) -> set[Key]:
        if kind is EVENTS:
            self.events.clear()
            touched: set[Key] = set()
            for event in objects:
                touched |= self._event(event, False)
            return touched
        touched = {key for key, kinds in self.members.items() if kinds.get(kind.plural)}
        self.objects[kind.plural] = {}
        for kinds in self.members.values():
            kinds.pop(kind.plural, None)
        for obj in objects:
            touched |= self._object(kind, obj, False)
        return touched

    def _object(self, kind: Kind, obj: Obj, deleted: bool) -> set[Key]:
        store = self.objects[kind.plural]
        object_name = name(obj)
        touched: set[Key] = set()
        previous = store.pop(object_name, None)
        if previous is not None:
            old = placement_key(previous)
            if old is not None:
                self.members[old][kind.plural].discard(object_name)
                touched.add(old)
        key = placement_key(obj)
        if not deleted and key is not None:
            store[object_name] = obj
            self.members[key][kind.plural].add(object_name)
            touched.add(key)
        if deleted and kind is PODS:
            self.events.pop(object_name, None)
        return touched

    def _event(self, event: Obj, deleted: bool) -> set[Key]:
        event_name = name(event)
        pod = str(involved(event).get("name") or "")
        by_pod = self.events.get(pod)
        if by_pod is not None:
            by_pod.pop(event_name, None)  # re-inserted below: the newest last
        if not deleted and pod:
            by_pod = self.events[pod]
            by_pod[event_name] = event
            if len(by_pod) > MAX_EVENTS_PER_POD:
                by_pod.pop(next(iter(by_pod)))
        found = self.objects[PODS.plural].get(pod)
        key = placement_key(found) if found is not None else None
        return {key} if key is not None else set()
