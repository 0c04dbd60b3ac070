"""Kubernetes objects as the API server sends them, written down small: pods in each phase of our pod
template (model-fetch init container, engine container), events, Deployments, LeaderWorkerSets.

Field names and values follow the API (core/v1 Pod, Event; apps/v1 Deployment;
leaderworkerset.x-k8s.io/v1) and the kubelet's reasons; see /work/shared/reference/observed_state.md.
"""

from __future__ import annotations

from typing import Any

from fleet.manifests import LWS_API

NS = "modelfleet"
ENGINE_IMAGE = "vllm/vllm-openai:v0.9.2"
FETCH_IMAGE = "docker.io/peakcom/s5cmd:v2.3.0"
T0 = "2026-03-01T10:00:00Z"


def at(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"2026-03-01T10:{minutes:02d}:{secs:02d}Z"


def our_labels(serving: str, pool: str, region: str = "cn-east") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelfleet-serving",
        "app.kubernetes.io/instance": f"{serving}-{pool}",
        "app.kubernetes.io/managed-by": "modelfleet",
        "modelfleet.io/workspace": "platform",
        "modelfleet.io/serving": serving,
        "modelfleet.io/region": region,
        "modelfleet.io/pool": pool,
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def running(started_at: str = T0) -> dict[str, Any]:
    return {"running": {"startedAt": started_at}}


def terminated(code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": T0}
    if message:
        body["message"] = message
    return {"terminated": body}


def status(
    name: str,
    state: dict[str, Any],
    *,
    ready: bool = False,
    started: bool | None = None,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    image: str = ENGINE_IMAGE,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "state": state,
        "ready": ready,
        "restartCount": restarts,
        "image": image,
        "imageID": "",
        "lastState": last or {},
    }
    if started is not None:
        out["started"] = started
    return out


FETCH_DONE = status("model-fetch", terminated(0, "Completed"), image=FETCH_IMAGE)


def pod(
    name: str,
    *,
    serving: str = "qwen",
    pool: str = "east-h100",
    region: str = "cn-east",
    node: str | None = "gpu-node-1",
    phase: str = "Pending",
    init: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    extra_labels: dict[str, str] | None = None,
    deleting: bool = False,
    rv: str = "1",
    reason: str | None = None,
    message: str | None = None,
    engine_image: str = ENGINE_IMAGE,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "uid": f"uid-{name}",
        "resourceVersion": rv,
        "labels": {**our_labels(serving, pool, region), **(extra_labels or {})},
        "creationTimestamp": T0,
    }
    if deleting:
        metadata["deletionTimestamp"] = T0
    spec: dict[str, Any] = {
        "initContainers": [{"name": "model-fetch", "image": FETCH_IMAGE}],
        "containers": [{"name": "engine", "image": engine_image}],
    }
    if node:
        spec["nodeName"] = node
    pod_status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if init is not None:
        pod_status["initContainerStatuses"] = [init]
    if engine is not None:
        pod_status["containerStatuses"] = [engine]
    if node:
        pod_status["podIP"] = "10.1.2.3"
    if reason:
        pod_status["reason"] = reason
    if message:
        pod_status["message"] = message
    return {"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": pod_status}


def unschedulable(message: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": T0,
        }
    ]


def event(
    pod_name: str,
    reason: str,
    message: str,
    *,
    kind: str = "Pod",
    type: str = "Normal",
    container: str | None = None,
    init: bool = False,
    when: str = T0,
    count: int = 1,
    name: str | None = None,
    rv: str = "1",
) -> dict[str, Any]:
    involved: dict[str, Any] = {"kind": kind, "namespace": NS, "name": pod_name, "uid": f"uid-{pod_name}"}
    if container:
        involved["fieldPath"] = f"spec.{'initContainers' if init else 'containers'}{{{container}}}"
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": name or f"{pod_name}.{reason}.{when}", "namespace": NS, "resourceVersion": rv},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": type,
        "count": count,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "source": {"component": "kubelet"},
    }


def deployment(
    serving: str = "qwen",
    pool: str = "east-h100",
    *,
    replicas: int = 1,
    conditions: list[dict[str, Any]] | None = None,
    region: str = "cn-east",
    rv: str = "1",
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": f"{serving}-{pool}",
            "namespace": NS,
            "uid": f"uid-{serving}-{pool}",
            "resourceVersion": rv,
            "labels": our_labels(serving, pool, region),
            "generation": 1,
        },
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": replicas, "conditions": conditions or []},
    }


def leader_worker_set(
    serving: str = "deepseek",
    pool: str = "south-910b",
    *,
    replicas: int = 1,
    size: int = 2,
    region: str = "cn-south",
    rv: str = "1",
) -> dict[str, Any]:
    return {
        "kind": "LeaderWorkerSet",
        "apiVersion": LWS_API,
        "metadata": {
            "name": f"{serving}-{pool}",
            "namespace": NS,
            "uid": f"uid-{serving}-{pool}",
            "resourceVersion": rv,
            "labels": our_labels(serving, pool, region),
        },
        "spec": {"replicas": replicas, "leaderWorkerTemplate": {"size": size}},
        "status": {"replicas": replicas, "readyReplicas": 0},
    }


def lws_pod(
    serving: str, pool: str, group: int, worker: int, *, region: str = "cn-south", **kw: Any
) -> dict[str, Any]:
    base = f"{serving}-{pool}-{group}"
    name = base if worker == 0 else f"{base}-{worker}"
    extra = {
        "leaderworkerset.sigs.k8s.io/name": f"{serving}-{pool}",
        "leaderworkerset.sigs.k8s.io/group-index": str(group),
        "leaderworkerset.sigs.k8s.io/worker-index": str(worker),
        "modelfleet.io/role": "leader" if worker == 0 else "worker",
    }
    return pod(name, serving=serving, pool=pool, region=region, extra_labels=extra, **kw)


def ready_pod(name: str, **kw: Any) -> dict[str, Any]:
    return pod(
        name,
        phase="Running",
        init=FETCH_DONE,
        engine=status("engine", running(), ready=True, started=True),
        **kw,
    )
