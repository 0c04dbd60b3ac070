"""Kubernetes objects for a placement, as plain dicts: deterministic, explicitly named and labelled.

One placement (a serving on one pool) becomes a Deployment (one node per replica) or a
LeaderWorkerSet (several), a Service, a PodDisruptionBudget and, when asked, a KEDA ScaledObject.
The Pulumi components wrap exactly these dicts; `fleet render` writes exactly these dicts.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from fleet import catalog, network, render, sharing, sources
from fleet.engine_args import EngineLaunch, Role
from fleet.planner import PlacementPlan
from fleet.sizing import SHM_GIB
from fleet.spec import ModelServing, Region
from fleet.stack import Fleet

Manifest = dict[str, Any]

LWS_API = "leaderworkerset.x-k8s.io/v1"
LAUNCHER_DIR = "/opt/modelfleet"
LABEL = "modelfleet.io"
PROBE_PERIOD = 10
# Seconds to load one GiB of weights from the node's cache into device memory, with margin.
LOAD_SECONDS_PER_GIB = 2.0
MIN_STARTUP_SECONDS = 300
SHM_SIZE = f"{SHM_GIB}Gi"
Member = Role  # which pod of a replica: the only one, a group's leader, or one of its workers
# Label and annotation keys, built once: every object of every placement carries them.
SERVING_LABEL = f"{LABEL}/serving"
POOL_LABEL = f"{LABEL}/pool"
WORKSPACE_LABEL = f"{LABEL}/workspace"
REGION_LABEL = f"{LABEL}/region"
ROLE_LABEL = f"{LABEL}/role"
_FACT_KEYS = tuple(
    f"{LABEL}/{fact}"
    for fact in (
        "accelerator",
        "accelerator-family",
        "sharing",
        "resource-name",
        "template",
        "engine",
        "weights-gib",
        "public-model",
    )
)


def object_name(serving: str, pool: str) -> str:
    return f"{serving}-{pool}"


def selector_labels(s: ModelServing, plan: PlacementPlan) -> dict[str, str]:
    return {SERVING_LABEL: s.name, POOL_LABEL: plan.pool}


def labels(s: ModelServing, plan: PlacementPlan, name: str | None = None) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelfleet-serving",
        "app.kubernetes.io/instance": name or object_name(s.name, plan.pool),
        "app.kubernetes.io/managed-by": "modelfleet",
        WORKSPACE_LABEL: s.workspace,
        SERVING_LABEL: s.name,
        REGION_LABEL: plan.region,
        POOL_LABEL: plan.pool,
    }


class _Names(NamedTuple):
    """What every object of one placement repeats, worked out once per placement; each object
    gets its own copy of the dicts (a YAML dump would alias shared ones, and callers may edit)."""

    name: str
    namespace: str
    labels: dict[str, str]
    selector: dict[str, str]


def _names(fleet: Fleet, s: ModelServing, plan: PlacementPlan) -> _Names:
    name = object_name(s.name, plan.pool)
    return _Names(name, fleet.regions[plan.region].namespace, labels(s, plan, name), selector_labels(s, plan))


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
    """Where the serving's weights come from, as a URI: `s3://bucket/prefix/<id>` for a catalog model
    (the region's store), the serving's own uri otherwise. The portal's model-store check reads the
    same keys for `s3://` sources."""
    return sources.of(s, region, fleet.models[s.name].id).uri


@cache
def _vendor_tolerations(vendor: str) -> list[Manifest]:
    return [t.model_dump(exclude_none=True) for t in catalog.vendors()[vendor].tolerations]


def _shared_cache(region: Region) -> bool:
    """A PVC cache is one volume for every node (ReadWriteMany); a host path is each node's own."""
    return region.model_store.cache.pvc is not None


def _init_containers(
    fleet: Fleet,
    s: ModelServing,
    plan: PlacementPlan,
    launch: EngineLaunch,
    member: Member,
    mount: str,
    source: sources.Source,
) -> list[Manifest]:
    """Bring the weights into the node cache before the engine starts (see fleet.sources): fetch them,
    or, for a worker of a group on a shared cache, wait for the leader's fetch."""
    region = fleet.regions[plan.region]
    model_id = fleet.models[s.name].id
    if not source.fetched:
        return []
    resources = plan.size.init
    cache_mount = [{"name": "models", "mountPath": mount}]
    dest = f"{mount}/{model_id}"
    marker = f"{dest}/{sources.READY_MARKER}"
    shared = plan.multi_node and _shared_cache(region)
    if shared and member == "worker":
        script = ["/bin/sh", "-c", sources.WAIT_FOR_MARKER, marker, str(sources.WAIT_TRIES)]
        return [
            {
                "name": "model-wait",
                "image": launch.image,
                "command": script,
                "resources": resources,
                "volumeMounts": cache_mount,
            }
        ]
    argv, env = sources.fetch_command(source, region, dest)
    fetch: Manifest
    if source.scheme == "s3":
        fetch = {"name": "model-fetch", "image": region.model_store.sync_image, "args": argv, "env": env}
    else:
        template = fleet.templates[s.template]
        image = sources.fetch_image(source, region, template, launch.image)
        fetch = {"name": "model-fetch", "image": image, "command": argv, "env": env}
    fetch["resources"] = resources
    fetch["volumeMounts"] = cache_mount
    out = [fetch]
    if shared:  # the leader tells its workers the weights are complete
        touch = ["/bin/sh", "-c", 'touch "$0"', marker]
        out.append(
            {
                "name": "model-ready",
                "image": launch.image,
                "command": touch,
                "resources": resources,
                "volumeMounts": cache_mount,
            }
        )
    return out


def _launcher(launch: EngineLaunch) -> str | None:
    return catalog.engines()[launch.engine].launcher


def _model_volume(
    fleet: Fleet, s: ModelServing, region: Region, mount: str, source: sources.Source
) -> tuple[Manifest, Manifest]:
    """(volume, engine mount) holding the weights: the node cache, or the source's own claim."""
    model_id = fleet.models[s.name].id
    if source.scheme == "pvc":
        claim = {"claimName": source.location, "readOnly": True}
        engine_mount: Manifest = {"name": "models", "mountPath": f"{mount}/{model_id}", "readOnly": True}
        if source.path:
            engine_mount["subPath"] = source.path
        return {"name": "models", "persistentVolumeClaim": claim}, engine_mount
    cache = region.model_store.cache
    volume: Manifest = (
        {"name": "models", "persistentVolumeClaim": {"claimName": cache.pvc}}
        if cache.pvc
        else {"name": "models", "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    )
    return volume, {"name": "models", "mountPath": mount, "readOnly": True}


def _env(s: ModelServing, launch: EngineLaunch) -> list[Manifest]:
    env: list[Manifest] = [{"name": k, "value": v} for k, v in launch.env.items()]
    if launch.field_env:
        env += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in launch.field_env.items()]
    if s.secret_env:
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for k, ref in s.secret_env.items()
        ]
    return env


def _pod_spec(
    fleet: Fleet,
    s: ModelServing,
    plan: PlacementPlan,
    launch: EngineLaunch,
    member: Member,
    names: _Names,
    launcher: str | None,
) -> Manifest:
    pool = fleet.pools[plan.pool]
    region = fleet.regions[plan.region]
    template = fleet.templates[s.template]
    role = launch.roles[member]
    mount = template.model_mount_path
    spec_ = pool.spec
    vendor = pool.vendor
    multi_node = plan.nodes > 1
    accelerators = {pool.resource_name: str(plan.devices_per_pod)}
    if spec_.sharing == "hami":
        accelerators.update(sharing.shares(pool).resources)
    if multi_node:
        accelerators.update(network.resources(pool))
    size = plan.size
    cpu, memory = str(size.cpu), f"{size.memory_gib}Gi"
    source = sources.of(s, region, fleet.models[s.name].id)
    model_volume, model_mount = _model_volume(fleet, s, region, mount, source)
    container: Manifest = {
        "name": "engine",
        "image": launch.image,
        "command": list(role.command),
        "args": list(role.args),
        "ports": [{"name": "http", "containerPort": launch.port, "protocol": "TCP"}],
        "env": _env(s, launch),
        # Requests equal limits for CPU and memory (fleet.sizing: Guaranteed QoS, never evicted first)
        # and for accelerators, which cannot be overcommitted anyway.
        "resources": {
            "requests": {"cpu": cpu, "memory": memory, **accelerators},
            "limits": {"cpu": cpu, "memory": memory, **accelerators},
        },
        "volumeMounts": [
            model_mount,
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": m.name, "mountPath": m.path, "readOnly": True} for m in vendor.host_mounts),
        ],
    }
    security = network.container_security(pool) if multi_node else None
    if security is not None:
        container["securityContext"] = security
    if launcher is not None:
        container["volumeMounts"].append({"name": "launcher", "mountPath": LAUNCHER_DIR, "readOnly": True})
    if member != "worker":
        budget = startup_budget_seconds(fleet, s, plan)
        container["startupProbe"] = _probe(launch, PROBE_PERIOD, budget // PROBE_PERIOD)
        container["readinessProbe"] = _probe(launch, PROBE_PERIOD, 3)
        container["livenessProbe"] = _probe(launch, 30, 5)
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}
    volumes = [
        model_volume,
        shm,
        *({"name": m.name, "hostPath": {"path": m.path, "type": m.type}} for m in vendor.host_mounts),
    ]
    if launcher is not None:
        volumes.append({"name": "launcher", "configMap": {"name": f"{names.name}-launcher"}})
    node_selector = dict(spec_.node_selector)
    node_selector["kubernetes.io/arch"] = spec_.cpu_arch
    tolerations = [dict(t) for t in _vendor_tolerations(spec_.vendor)]  # copies: callers may edit
    if spec_.taints:
        tolerations[:0] = [
            {"key": t.key, "operator": "Equal", "value": t.value, "effect": t.effect} for t in spec_.taints
        ]
    spec: Manifest = {
        "initContainers": _init_containers(fleet, s, plan, launch, member, mount, source),
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "enableServiceLinks": False,
        # In-flight generations finish before the engine is killed on scale-down or rollout.
        "terminationGracePeriodSeconds": 120,
    }
    if not spec["initContainers"]:
        del spec["initContainers"]
    if multi_node:
        spec.update(network.pod_fields(pool))
    if vendor.runtime_class:
        spec["runtimeClassName"] = vendor.runtime_class
    if vendor.supplemental_groups:
        spec["securityContext"] = {"supplementalGroups": list(vendor.supplemental_groups)}
    if fleet.platform.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in fleet.platform.image_pull_secrets]
    return spec


def _pod_metadata(fleet: Fleet, plan: PlacementPlan, labels: dict[str, str]) -> Manifest:
    pool = fleet.pools[plan.pool]
    if pool.spec.sharing != "hami" and not plan.multi_node:
        return {"labels": labels}
    annotations = dict(sharing.shares(pool).annotations)
    if plan.multi_node:
        annotations.update(network.pod_annotations(pool))
    return {"labels": labels, "annotations": annotations} if annotations else {"labels": labels}


def _metadata(names: _Names, name: str | None = None) -> Manifest:
    return {"name": name or names.name, "namespace": names.namespace, "labels": dict(names.labels)}


def placement_facts(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch
) -> dict[str, str]:
    """Annotations on the workload with what the policies cannot read back from the pod spec."""
    pool = fleet.pools[plan.pool]
    accelerator, family, sharing_, resource, template, engine, weights, public = _FACT_KEYS
    facts = {
        accelerator: pool.spec.accelerator,
        family: pool.family,
        sharing_: pool.spec.sharing,
        resource: pool.resource_name,
        template: s.template,
        engine: f"{launch.engine} {launch.engine_version}",
        weights: f"{plan.memory.weights_gib:.1f}",
    }
    if s.public_model_name:
        facts[public] = s.public_model_name
    return facts


def workload(
    fleet: Fleet,
    s: ModelServing,
    plan: PlacementPlan,
    launch: EngineLaunch,
    names: _Names,
    launcher: str | None,
) -> Manifest:
    metadata = {
        "name": names.name,
        "namespace": names.namespace,
        "labels": dict(names.labels),
        "annotations": placement_facts(fleet, s, plan, launch),
    }
    if not plan.multi_node:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": plan.replicas,
                "selector": {"matchLabels": dict(names.selector)},
                # Accelerators are scarce: replace pods in place instead of surging extra ones.
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
                },
                "template": {
                    "metadata": _pod_metadata(fleet, plan, dict(names.labels)),
                    "spec": _pod_spec(fleet, s, plan, launch, "single", names, launcher),
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
                    "metadata": _pod_metadata(fleet, plan, {**names.labels, ROLE_LABEL: "leader"}),
                    "spec": _pod_spec(fleet, s, plan, launch, "leader", names, launcher),
                },
                "workerTemplate": {
                    "metadata": _pod_metadata(fleet, plan, {**names.labels, ROLE_LABEL: "worker"}),
                    "spec": _pod_spec(fleet, s, plan, launch, "worker", names, launcher),
                },
            },
        },
    }


def service(plan: PlacementPlan, launch: EngineLaunch, names: _Names) -> Manifest:
    selector = dict(names.selector)
    if plan.multi_node:
        selector[ROLE_LABEL] = "leader"  # only leaders serve HTTP
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": launch.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(names: _Names) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(names.selector)}},
    }


def autoscaler(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch, names: _Names
) -> Manifest | None:
    scaling = s.autoscaling
    if scaling is None:
        return None
    region = fleet.regions[plan.region]
    if region.prometheus_url is None:
        return None
    metric = catalog.engines()[launch.engine].metrics.get(scaling.metric)
    if metric is None:
        return None
    name = names.name
    query = f'sum({metric}{{namespace="{region.namespace}",pod=~"{name}-.*"}})'
    target_kind = "LeaderWorkerSet" if plan.multi_node else "Deployment"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(names),
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


def launcher_config_map(names: _Names, launcher: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(names, f"{names.name}-launcher"),
        "data": {Path(launcher).name: render.read_asset(launcher)},
    }


def placement_objects(
    fleet: Fleet, s: ModelServing, plan: PlacementPlan, launch: EngineLaunch
) -> list[Manifest]:
    if fleet.regions[plan.region].runtime == "local":
        return []  # the control plane runs the launch as processes: nothing for a cluster
    names = _names(fleet, s, plan)
    launcher = _launcher(launch)
    objects = [
        workload(fleet, s, plan, launch, names, launcher),
        service(plan, launch, names),
        disruption_budget(names),
    ]
    if launcher is not None:
        objects.insert(0, launcher_config_map(names, launcher))
    scaler = autoscaler(fleet, s, plan, launch, names)
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
