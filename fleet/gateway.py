"""Kubernetes objects for the MaaS gateway in one region, as plain dicts (see `fleet.spec.Gateway`).

Per region: a Deployment running `python -m gateway` (several replicas, database, Redis and
pepper from Secrets, probes on `/healthz`, hardened pod), a Service, a PodDisruptionBudget and, when
autoscaling is on, an `autoscaling/v2` HorizontalPodAutoscaler on CPU. The `MaasGateway` Pulumi
component wraps exactly these dicts; `gateway_objects` is what tests and `fleet` tooling read.
"""

from __future__ import annotations

from typing import Any

from fleet.manifests import LABEL, Manifest
from fleet.spec import Gateway, Platform, Region, SecretKey
from fleet.stack import Fleet

NAME = "modelfleet-gateway"
HEALTH_PATH = "/healthz"
DATA_DIR = "/var/lib/modelfleet"  # the settings' data_dir: writable scratch, nothing durable
PRE_STOP_SECONDS = 5  # time for the Service to stop sending new requests before SIGTERM
GRACE_SECONDS = 330  # in-flight streams finish: longer than the gateway's 300 s read timeout
SLEEP_ACTION_SINCE = 30  # Kubernetes minor version whose preStop `sleep` action is on by default


def selector_labels(region: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, f"{LABEL}/region": region}


def labels(region: str) -> dict[str, str]:
    return {
        **selector_labels(region),
        "app.kubernetes.io/component": "gateway",
        "app.kubernetes.io/part-of": "modelfleet",
        "app.kubernetes.io/managed-by": "modelfleet",
    }


def _metadata(region: Region) -> Manifest:
    return {"name": NAME, "namespace": region.namespace, "labels": labels(region.name)}


def _secret_env(name: str, ref: SecretKey) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def environment(gateway: Gateway, region: Region) -> list[Manifest]:
    """The gateway's settings (`portal.settings`, prefix MODELFLEET_): connections from Secrets, the
    region for locality routing, and the replica count the local limiter fallback divides limits by
    (the autoscaler's maximum: during a Redis outage replicas under-admit rather than overshoot)."""
    fixed: dict[str, str] = {
        "HOME": DATA_DIR,  # git (the portal's stacks repository) wants a writable home; the root is read-only
        "MODELFLEET_DATA_DIR": DATA_DIR,
        "MODELFLEET_GATEWAY_REGION": region.name,
        "MODELFLEET_GATEWAY_REPLICAS": str(gateway.max_replicas),
        "MODELFLEET_WORKER_ENABLED": "false",
        **gateway.env,
    }
    return [
        _secret_env("MODELFLEET_DATABASE_URL", gateway.database_url),
        _secret_env("MODELFLEET_REDIS_URL", gateway.redis_url),
        _secret_env("MODELFLEET_PEPPER", gateway.pepper),
        *({"name": k, "value": v} for k, v in sorted(fixed.items())),
    ]


def _pre_stop(platform: Platform) -> Manifest:
    minor = int(platform.kubernetes_version.split(".")[1])
    if minor >= SLEEP_ACTION_SINCE:
        return {"sleep": {"seconds": PRE_STOP_SECONDS}}
    return {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}


def _probe(period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def deployment(gateway: Gateway, region: Region, platform: Platform) -> Manifest:
    container: Manifest = {
        "name": "gateway",
        "image": gateway.image,
        "command": ["python", "-m", "gateway"],
        "args": ["--host", "0.0.0.0", "--port", str(gateway.port)],
        "ports": [{"name": "http", "containerPort": gateway.port, "protocol": "TCP"}],
        "env": environment(gateway, region),
        "resources": {
            "requests": {"cpu": gateway.cpu, "memory": gateway.memory},
            "limits": {"memory": gateway.memory_limit},  # no CPU limit: throttling shows up as latency
        },
        "readinessProbe": _probe(period=5, failures=2),
        "livenessProbe": _probe(period=10, failures=6),
        "lifecycle": {"preStop": _pre_stop(platform)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod: Manifest = {
        "containers": [container],
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(region.name)},
            }
        ],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if platform.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in platform.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(region),
        "spec": {
            "replicas": gateway.min_replicas,
            "selector": {"matchLabels": selector_labels(region.name)},
            # Never below the serving capacity while rolling: new pods first, then old ones go.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {"metadata": {"labels": labels(region.name)}, "spec": pod},
        },
    }


def service(gateway: Gateway, region: Region) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(region),
        "spec": {
            "type": gateway.service_type,
            "selector": selector_labels(region.name),
            "ports": [{"name": "http", "port": gateway.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(region: Region) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(region),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(region.name)}},
    }


def autoscaler(gateway: Gateway, region: Region) -> Manifest | None:
    scaling = gateway.autoscaling
    if scaling is None:
        return None
    target: dict[str, Any] = {"type": "Utilization", "averageUtilization": scaling.cpu_utilization}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(region),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": target}}],
        },
    }


def region_objects(gateway: Gateway, region: Region, platform: Platform) -> tuple[Manifest, ...]:
    """The gateway's objects in one region, in apply order."""
    objects = [deployment(gateway, region, platform), service(gateway, region), disruption_budget(region)]
    hpa = autoscaler(gateway, region)
    if hpa is not None:
        objects.append(hpa)
    return tuple(objects)


def gateway_regions(fleet: Fleet) -> list[str]:
    """The regions the gateway runs in (none when the stack has no `platform.gateway`); never a
    `local` region (the portal's own gateway serves it)."""
    gateway = fleet.platform.gateway
    if gateway is None:
        return []
    return [
        name
        for name, region in fleet.regions.items()
        if region.runtime == "kubernetes" and (gateway.regions is None or name in gateway.regions)
    ]


def gateway_objects(fleet: Fleet) -> dict[str, tuple[Manifest, ...]]:
    """Region -> the gateway's objects there."""
    gateway = fleet.platform.gateway
    if gateway is None:
        return {}
    return {
        name: region_objects(gateway, fleet.regions[name], fleet.platform) for name in gateway_regions(fleet)
    }
