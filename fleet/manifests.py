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
Member = Role  # which pod of a replica: the only one, a group's leader, or one of its workers


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
        fetch = {"name": "model-fetch", "image": region.model_store.sync_image, "args": argv}
    else:
        template = fleet.templates[s.template]
        image = sources.fetch_image(source, region, template, launch.image)
        fetch = {"name": "model-fetch", "image": image, "command": argv}
    fetch.update({"env": env, "resources": resources, "volumeMounts": cache_mount})
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
    env += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in launch.field_env.items()]
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
) -> Manifest:
    pool = fleet.pools[plan.pool]
    region = fleet.regions[plan.region]
    template = fleet.templates[s.template]
    role = launch.roles[member]
    mount = template.model_mount_path
    accelerators = {pool.resource_name: str(plan.devices_per_pod)}
    if pool.spec.sharing == "hami":
        accelerators.update(sharing.shares(pool).resources)
    if plan.multi_node:
        accelerators.update(network.resources(pool))
    size = plan.size.engine
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
            "requests": {**size["requests"], **accelerators},
            "limits": {**size["limits"], **accelerators},
        },
        "volumeMounts": [
            model_mount,
            {"name": "dshm", "mountPath": "/dev/shm"},
            *({"name": m.name, "mountPath": m.path, "readOnly": True} for m in pool.vendor.host_mounts),
        ],
    }
    security = network.container_security(pool) if plan.multi_node else None
    if security is not None:
        container["securityContext"] = security
    launcher = _launcher(launch)
    if launcher is not None:
        container["volumeMounts"].append({"name": "launcher", "mountPath": LAUNCHER_DIR, "readOnly": True})
    if member != "worker":
        budget = startup_budget_seconds(fleet, s, plan)
        container["startupProbe"] = _probe(launch, PROBE_PERIOD, budget // PROBE_PERIOD)
        container["readinessProbe"] = _probe(launch, PROBE_PERIOD, 3)
        container["livenessProbe"] = _probe(launch, 30, 5)
    shm = {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB}Gi"}}
    host = [{"name": m.name, "hostPath": {"path": m.path, "type": m.type}} for m in pool.vendor.host_mounts]
    volumes = [model_volume, shm, *host]
    if launcher is not None:
        volumes.append(
            {"name": "launcher", "configMap": {"name": f"{object_name(s.name, plan.pool)}-launcher"}}
        )
    spec: Manifest = {
        "initContainers": _init_containers(fleet, s, plan, launch, member, mount, source),
        "containers": [container],
        "volumes": volumes,
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
    if not spec["initContainers"]:
        del spec["initContainers"]
    if plan.multi_node:
        spec.update(network.pod_fields(pool))
    spec["nodeSelector"]["kubernetes.io/arch"] = pool.spec.cpu_arch
    if pool.vendor.runtime_class:
        spec["runtimeClassName"] = pool.vendor.runtime_class
    if pool.vendor.supplemental_groups:
        spec["securityContext"] = {"supplementalGroups": list(pool.vendor.supplemental_groups)}
    if fleet.platform.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in fleet.platform.image_pull_secrets]
    return spec


def _pod_metadata(fleet: Fleet, s: ModelServing, plan: PlacementPlan, labels: dict[str, str]) -> Manifest:
    pool = fleet.pools[plan.pool]
    if pool.spec.sharing != "hami" and not plan.multi_node:
        return {"labels": labels}
    annotations = dict(sharing.shares(pool).annotations)
    if plan.multi_node:
        annotations.update(network.pod_annotations(pool))
    return {"labels": labels, "annotations": annotations} if annotations else {"labels": labels}


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
                    "metadata": _pod_metadata(fleet, s, plan, pod_labels),
                    "spec": _pod_spec(fleet, s, plan, launch, "single"),
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
                    "metadata": _pod_metadata(fleet, s, plan, {**pod_labels, f"{LABEL}/role": "leader"}),
                    "spec": _pod_spec(fleet, s, plan, launch, "leader"),
                },
                "workerTemplate": {
                    "metadata": _pod_metadata(fleet, s, plan, {**pod_labels, f"{LABEL}/role": "worker"}),
                    "spec": _pod_spec(fleet, s, plan, launch, "worker"),
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
