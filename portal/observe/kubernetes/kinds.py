"""What the observer watches in a region's namespace, and where the API serves it.

Workloads and pods are selected by the labels our manifests put on them (managed by modelfleet, in
this region); events cannot be selected by the labels of the object they are about, so the server
sends the namespace's pod events (`involvedObject.kind=Pod`) and the derivation keeps those about
our pods.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.manifests import LWS_API
from portal.observe.kubernetes.objects import MANAGED_BY, REGION


@dataclass(frozen=True)
class Kind:
    plural: str  # deployments, leaderworkersets, pods, events
    kind: str  # Deployment, LeaderWorkerSet, Pod, Event
    group_version: str  # v1, apps/v1, leaderworkerset.x-k8s.io/v1
    labelled: bool = True  # selected by our labels (events are not)
    field_selector: str | None = None

    def path(self, namespace: str) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{root}/namespaces/{namespace}/{self.plural}"

    def selectors(self, region: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.labelled:
            out["labelSelector"] = f"{MANAGED_BY}=modelfleet,{REGION}={region}"
        if self.field_selector:
            out["fieldSelector"] = self.field_selector
        return out


DEPLOYMENTS = Kind("deployments", "Deployment", "apps/v1")
LEADER_WORKER_SETS = Kind("leaderworkersets", "LeaderWorkerSet", LWS_API)
PODS = Kind("pods", "Pod", "v1")
EVENTS = Kind("events", "Event", "v1", labelled=False, field_selector="involvedObject.kind=Pod")

WATCHED = (DEPLOYMENTS, LEADER_WORKER_SETS, PODS, EVENTS)
