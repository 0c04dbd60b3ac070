"""Kubernetes objects for a placement, as plain dicts: deterministic, explicitly named and labelled.

One placement (a serving on one pool) becomes a Deployment (one node per replica) or a
LeaderWorkerSet (several), a Service, a PodDisruptionBudget and, when asked, a KEDA ScaledObject.
The Pulumi components wrap exactly these dicts; `fleet render` writes exactly these dicts.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

from fleet import catalog, render
from fleet.engine_args import EngineLaunch, RoleCommand
from fleet.planner import PlacementPlan
from fleet.spec import ModelServing, ModelSource, Region
from fleet.stack import Fleet, PoolFacts

Manifest = dict[str, Any]

LWS_API = "leaderworkerset.x-k8s.io/v1"
LAUNCHER_DIR = "/opt/modelfleet"
LABEL = "modelfleet.io"
PROBE_PERIOD = 10
# Seconds to load one GiB of weights from the node's cache into device memory, with margin.
LOAD_SECONDS_PER_GIB = 2.0
MIN_STARTUP_SECONDS = 300
SHM_GIB = 16


def object_name(serving: str, pool: str) -> str:
    return f"{serving}-{pool}"


def selector_labels(s: ModelServing, plan: PlacementPlan) -> dict[str, str]:
    return {f"{LABEL}/serving": s.name, f"{LABEL}/pool": plan.pool}


def labels(s: ModelServing, plan: PlacementPlan) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelfleet-serving",
        "app.kubernetes.io/instance": object_name(s.name, plan.pool),
        "app.kubernetes.io/managed-by": "modelfleet",
        f"{LABEL}/workspace": s.workspace,
        f"{LABEL}/serving": s.name,
        f"{LABEL}/region": plan.region,
        f"{LABEL}/pool": plan.pool,
    }


def startup_budget_seconds(fleet: Fleet, s: ModelServing, plan: PlacementPlan) -> int:
    """Time allowed before liveness starts: generous, because a restart reloads everything."""
    configured = fleet.templates[s.template].probes.startup_budget_seconds
    if configured is not None:
        return configured
    per_node_gib = plan.memory.weights_gib / plan.nodes
    seconds = MIN_STARTUP_SECONDS + per_node_gib * LOAD_SECONDS_PER_GIB
    return int(math.ceil(seconds / 60) * 60)


def _probe(launch: EngineLaunch, period: int, failures: int, timeout: int = 5) -> Manifest:
    action: Manifest = (
        {"httpGet": {"path": launch.health_path, "port": "http"}}
        if launch.health_path
        else {"tcpSocket": {"port": "http"}}
    )
    return {
        **action,
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def model_source(fleet: Fleet, s: ModelServing, region: Region) -> str:
    """Where the region's model-fetch init container reads the weights: `s3://bucket/prefix/<id>`
    (an explicit `s3://` model uri as written). The portal's model-store check looks at the same keys."""
    model = s.model
    if isinstance(model, ModelSource) and model.uri.startswith("s3://"):
        return model.uri.rstrip("/")
    store = region.model_store
    prefix = f"{store.prefix}/" if store.prefix else ""
    return f"s3://{store.bucket}/{prefix}{fleet.models[s.name].id}"


@cache
def _vendor_tolerations(vendor: str) -> list[Manifest]:
    return [t.model_dump(exclude_none=True) for t in catalog.vendors()[vendor].tolerations]


def _fetch_container(fleet: Fleet, s: ModelServing, region: Region, mount: str) -> Manifest:
    """Sync the weights from the region's S3-compatible store into the node cache (idempotent)."""
    store = region.model_store
    model_id = fleet.models[s.name].id
    secret = store.credentials_secret
    return {
        "name": "model-fetch",
        "image": store.sync_image,
        "args": [
            "--endpoint-url",
            store.endpoint,
            "sync",
            f"{model_source(fleet, s, region)}/*",
            f"{mount}/{model_id}/",
        ],
        "env": [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ],
        "volumeMounts": [{"name": "models", "mountPath": mount}],
    }


def _launcher(launch: EngineLaunch) -> str | None:
    return catalog.engines()[launch.engine].launcher


def _volumes(region: Region, pool: PoolFacts, launcher_configmap: str | None) -> list[Manifest]:
    cache = region.model_store.cache
    model_volume: Manifest = (
        {"name": "models", "persistentVolumeClaim": {"claimName": cache.pvc}}
        if cache.pvc
        else {"name": "models", "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    )
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB}Gi"}}
    host = [{"name": m.name, "hostPath": {"path": m.path, "type": m.type}} for m in pool.vendor.host_mounts]
    volumes = [model_volume, shm, *host]
    if launcher_configmap is not None:
        volumes.append({"name": "launcher", "configMap": {"name": launcher_configmap}})
    return volumes


def _env(launch: EngineLaunch) -> list[Manifest]:
    env: list[Manifest] = [{"name": k, "value": v} for k, v in launch.env.items()]
    env += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in launch.field_env.items()]
    return env


def _pod_spec(
    fleet: Fleet,
    s: ModelServing,
    plan: PlacementPlan,
    launch: EngineLaunch,
    role: RoleCommand,
    serves: bool,
) -> Manifest:
    pool = fleet.pools[plan.pool]
    region = fleet.regions[plan.region]
    template = fleet.templates[s.template]
    mount = template.model_mount_path
    devices = str(plan.devices_per_pod)
    container: Manifest = {
        "name": "engine",
        "image": launch.image,
        "command": list(role.command),
        "args": list(role.args),
        "ports": [{"name": "http", "containerPort": launch.port, "protocol": "TCP"}],
        "env": _env(launch),
        # Requests equal limits: extended resources cannot be overcommitted anyway, and the pod
        # lands in the Guaranteed class for its accelerators.
        "resources": {
            "requests": {pool.resource_name: devices},
            "limits": {pool.resource_name: devices},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": mount, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": m.name, "mountPath": m.path, "readOnly": True} for m in pool.vendor.host_mounts),
        ],
    }
    launcher = _launcher(launch)
    if launcher is not None:
        container["volumeMounts"].append({"name": "launcher", "mountPath": LAUNCHER_DIR, "readOnly": True})
    if serves:
        budget = startup_budget_seconds(fleet, s, plan)
        container["startupProbe"] = _probe(launch, PROBE_PERIOD, budget // PROBE_PERIOD)
        container["readinessProbe"] = _probe(launch, PROBE_PERIOD, 3)
        container["livenessProbe"] = _probe(launch, 30, 5)
    spec: Manifest = {
        "initContainers": [_fetch_container(fleet, s, region, mount)],
        "containers": [container],
        "volumes": _volumes(region, pool, f"{object_name(s.name, plan.pool)}-launcher" if launcher else None),
        "nodeSelector": dict(pool.spec.node_selector),
        "tolerations": [
            {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect}
            for t in pool.spec.taints
        ]
        + [dict(t) for t in _vendor_tolerations(pool.spec.vendor)],  # copies: callers may edit
        "enableServiceLinks": False,
        # In-flight generations finish before the engine is killed on scale-down or rollout.
        "terminationGracePeriodSeconds": 120,
    }
    spec["nodeSelector"]["kubernetes.io/arch"] = pool.spec.cpu_arch
    if pool.vendor.runtime_class:
        spec["runtimeClassName"] = pool.vendor.runtime_class
    if pool.vendor.supplemental_groups:
        spec["securityContext"] = {"supplementalGroups": list(pool.vendor.supplemental_groups)}
    if fleet.platform.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in fleet.platform.image_pull_secrets]
    return spec


def _metadata(s: ModelServing, plan: PlacementPlan, namespace: str, name: str | None = None) -> Manifest:
    return {
        "name": name or object_name(s.name, plan.pool),
        "namespace": namespace,
        "labels": labels(s, plan),
    }


def placement_facts(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch
) -> dict[str, str]:
    """Annotations on the workload with what the policies cannot read back from the pod spec."""
    pool = fleet.pools[plan.pool]
    facts = {
        f"{LABEL}/accelerator": pool.spec.accelerator,
        f"{LABEL}/accelerator-family": pool.family,
        f"{LABEL}/sharing": pool.spec.sharing,
        f"{LABEL}/resource-name": pool.resource_name,
        f"{LABEL}/template": s.template,
        f"{LABEL}/engine": f"{launch.engine} {launch.engine_version}",
        f"{LABEL}/weights-gib": f"{plan.memory.weights_gib:.1f}",
    }
    if s.public_model_name:
        facts[f"{LABEL}/public-model"] = s.public_model_name
    return facts


def workload(fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch) -> Manifest:
    namespace = fleet.regions[plan.region].namespace
    pod_labels = labels(s, plan)
    metadata = {**_metadata(s, plan, namespace), "annotations": placement_facts(fleet, s, plan, launch)}
    if not plan.multi_node:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": plan.replicas,
                "selector": {"matchLabels": selector_labels(s, plan)},
                # Accelerators are scarce: replace pods in place instead of surging extra ones.
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                },
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": _pod_spec(fleet, s, plan, launch, launch.roles["single"], True),
                },
            },
        }
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": metadata,
        "spec": {
            "replicas": plan.replicas,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": plan.nodes,
                # A restarted worker cannot rejoin its group's collectives: restart the whole group.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": {**pod_labels, f"{LABEL}/role": "leader"}},
                    "spec": _pod_spec(fleet, s, plan, launch, launch.roles["leader"], True),
                },
                "workerTemplate": {
                    "metadata": {"labels": {**pod_labels, f"{LABEL}/role": "worker"}},
                    "spec": _pod_spec(fleet, s, plan, launch, launch.roles["worker"], False),
                },
            },
        },
    }


def service(fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch) -> Manifest:
    selector = selector_labels(s, plan)
    if plan.multi_node:
        selector = {**selector, f"{LABEL}/role": "leader"}  # only leaders serve HTTP
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(s, plan, fleet.regions[plan.region].namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": launch.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(fleet: Fleet, s: ModelServing, plan: PlacementPlan) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(s, plan, fleet.regions[plan.region].namespace),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(s, plan)}},
    }


def autoscaler(fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch) -> Manifest | None:
    scaling = s.autoscaling
    region = fleet.regions[plan.region]
    if scaling is None or region.prometheus_url is None:
        return None
    metric = catalog.engines()[launch.engine].metrics.get(scaling.metric)
    if metric is None:
        return None
    name = object_name(s.name, plan.pool)
    query = f'sum({metric}{{namespace="{region.namespace}",pod=~"{name}-.*"}})'
    target_kind = "LeaderWorkerSet" if plan.multi_node else "Deployment"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(s, plan, region.namespace),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": LWS_API if plan.multi_node else "apps/v1",
                "kind": target_kind,
                "name": name,
            },
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            # Model replicas take minutes to start: scale down slowly.
            "cooldownPeriod": 600,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": region.prometheus_url,
                        "query": query,
                        "threshold": f"{scaling.target:g}",
                    },
                }
            ],
        },
    }


def launcher_config_map(fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch) -> Manifest:
    launcher = _launcher(launch)
    assert launcher is not None
    name = f"{object_name(s.name, plan.pool)}-launcher"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(s, plan, fleet.regions[plan.region].namespace, name),
        "data": {Path(launcher).name: render.read_asset(launcher)},
    }


def placement_objects(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch
) -> list[Manifest]:
    if fleet.regions[plan.region].runtime == "local":
        return []  # the control plane runs the launch as processes: nothing for a cluster
    objects = [
        workload(fleet, s, plan, launch),
        service(fleet, s, plan, launch),
        disruption_budget(fleet, s, plan),
    ]
    if _launcher(launch) is not None:
        objects.insert(0, launcher_config_map(fleet, s, plan, launch))
    scaler = autoscaler(fleet, s, plan, launch)
    if scaler is not None:
        objects.append(scaler)
    return objects


def namespace(region: Region) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": region.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "modelfleet",
                f"{LABEL}/region": region.name,
            },
        },
    }


def endpoint(fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch) -> str:
    """In-cluster URL the gateway routes to."""
    ns = fleet.regions[plan.region].namespace
    return f"http://{object_name(s.name, plan.pool)}.{ns}.svc.cluster.local:{launch.port}"
