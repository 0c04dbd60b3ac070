"""Rules over one Kubernetes object at a time: what a resource policy sees.

Each rule takes the object (wire format) and its settings and returns messages; every message starts
with the object (`Deployment modelfleet/qwen-east-h100: ...`) and ends with the fix. Objects that a rule
does not concern (a Service for a pod rule, a provider) give no message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from fnmatch import fnmatch
from typing import Any

from fleet import catalog, secrets
from fleet.rules import pods
from fleet.rules.base import per_workspace
from fleet.rules.pods import LABEL, Obj

Check = Callable[[Obj, Mapping[str, Any]], list[str]]
OWNERSHIP = ("workspace", "serving", "region")
SERVING_KINDS = (*pods.WORKLOAD_KINDS, "Service", "PodDisruptionBudget", "ScaledObject", "ConfigMap")
GROUP_RESTART = "RecreateGroupOnPodRestart"


def _display(vendor: str | None) -> str:
    if vendor is None:
        return "unknown"
    entry = catalog.vendors().get(vendor)
    return entry.display_name if entry else vendor


def accelerator_resource(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    subject = pods.describe(obj)
    expected = pods.pool_vendor(obj)
    pool_resource = pods.annotation(obj, "resource-name")
    if pool_resource is not None and pods.vendor_of(pool_resource) not in (None, expected):
        out.append(
            f"{subject}: the pool's resource name {pool_resource} belongs to "
            f"{_display(pods.vendor_of(pool_resource))}, not {_display(expected)}; fix the pool's "
            "resource_name to the name its device plugin advertises"
        )
    for template in pods.pod_templates(obj):
        held = wrong = False
        for c in pods.containers(template.spec, init=True):
            asked = pods.accelerator_resources(c)
            where = f"{subject}: {template.where(c)}"
            vendors = {pods.vendor_of(name) for name in asked}
            if expected is None and len(vendors) > 1:
                names = ", ".join(sorted(asked))
                out.append(f"{where} mixes vendors' resources ({names}); request one vendor's devices only")
            for name, (request, limit) in sorted(asked.items()):
                vendor = pods.vendor_of(name)
                if expected is not None and vendor != expected:
                    fix = pool_resource or catalog.vendors()[expected].resource_name
                    out.append(
                        f"{where} requests {name} ({_display(vendor)}) but runs on a {_display(expected)} "
                        f"pool: pods would never schedule; request {fix} instead"
                    )
                    wrong = True
                    continue
                if pool_resource and pods.is_device_count(name, None) and name != pool_resource:
                    out.append(
                        f"{where} requests {name} but the pool's device plugin advertises "
                        f"{pool_resource}; request {pool_resource}"
                    )
                if request != limit:
                    value = limit or request
                    out.append(
                        f"{where} requests {request or 'no'} {name} but limits {limit or 'none'}; "
                        f"set requests and limits both to {value}"
                    )
                held = held or pods.is_device_count(name, pool_resource)
        if expected is not None and pool_resource and not (held or wrong) and template.spec:
            out.append(
                f"{subject}: {template.role or 'pod'} template holds no {pool_resource}; the engine "
                f"container must request and limit {pool_resource}"
            )
    return out


def _replica_devices(obj: Obj) -> tuple[Obj, int, int, list[str]] | None:
    """(engine container, devices per pod, pods per replica, argv) of a serving workload."""
    pool_resource = pods.annotation(obj, "resource-name")
    templates = pods.pod_templates(obj)
    if not templates:
        return None
    container = pods.engine_container(templates[0].spec, pool_resource)
    if container is None:
        return None
    per_pod = pods.devices(container, pool_resource)
    return container, per_pod, pods.group_size(obj), pods.argv(container)


def parallelism_layout(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    found = _replica_devices(obj)
    if found is None:
        return []
    _, per_pod, size, tokens = found
    if not per_pod or pods.engine_of(obj, tokens) not in pods.ENGINES:
        return []  # no devices (accelerator-resource says so) or an engine whose flags we do not know
    lay = pods.layout(tokens)
    subject = pods.describe(obj)
    out: list[str] = []
    total = per_pod * size
    if lay.devices != total:
        out.append(
            f"{subject}: tensor {lay.tensor} x pipeline {lay.pipeline} x data {lay.data} = {lay.devices} "
            f"devices but a replica holds {total} ({size} pod(s) x {per_pod}); make the serving's "
            "parallelism match the devices (or drop the parallelism flags from extra_args)"
        )
    # Tensor parallel either divides a node's devices or spans whole nodes (SGLang's --tp 16 on 2 x 8).
    across = size > 1 and lay.tensor > per_pod and lay.tensor % per_pod == 0
    if per_pod % lay.tensor and not across:
        whole = f" (or a multiple of {per_pod}, spanning whole nodes)" if size > 1 else ""
        out.append(
            f"{subject}: tensor parallel {lay.tensor} does not divide the {per_pod} devices of each node; "
            f"use a tensor parallel size that divides {per_pod} and split the rest with pipeline{whole}"
        )
    if lay.nnodes is not None and lay.nnodes != size:
        out.append(
            f"{subject}: --nnodes {lay.nnodes} but a replica has {size} pod(s); set the serving's "
            "parallelism.nodes instead of passing --nnodes"
        )
    return out


def multi_node_group(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    subject = pods.describe(obj)
    if pods.kind(obj) == "LeaderWorkerSet":
        policy = pods.at(obj, "spec", "leaderWorkerTemplate", "restartPolicy")
        if policy != GROUP_RESTART:
            return [
                f"{subject}: restartPolicy is {policy or 'unset (Default)'}; a restarted pod cannot rejoin "
                f"its group's collectives, set spec.leaderWorkerTemplate.restartPolicy: {GROUP_RESTART}"
            ]
        return []
    if not pods.is_workload(obj):
        return []
    for template in pods.pod_templates(obj):
        for c in pods.containers(template.spec):
            nnodes = pods.layout(pods.argv(c)).nnodes
            if nnodes is not None and nnodes > 1:
                return [
                    f"{subject}: {template.where(c)} spans {nnodes} nodes (--nnodes) in a "
                    f"{pods.kind(obj)}; multi-node replicas must be LeaderWorkerSets with "
                    f"restartPolicy {GROUP_RESTART} (set parallelism.nodes on the serving)"
                ]
    return []


def shared_memory(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    subject = pods.describe(obj)
    for template in pods.pod_templates(obj):
        volumes = {str(v.get("name")): v for v in map(pods.mapping, pods.seq(template.spec.get("volumes")))}
        for c in pods.containers(template.spec):
            if not pods.accelerator_resources(c):
                continue
            mounts = [pods.mapping(m) for m in pods.seq(c.get("volumeMounts"))]
            shm = next((m for m in mounts if m.get("mountPath") == "/dev/shm"), None)
            fix = "mount an emptyDir {medium: Memory, sizeLimit: 16Gi} at /dev/shm"
            if shm is None:
                out.append(f"{subject}: {template.where(c)} has no /dev/shm mount; {fix}")
                continue
            medium = pods.at(volumes.get(str(shm.get("name"))), "emptyDir", "medium")
            if medium != "Memory":
                out.append(f"{subject}: {template.where(c)} mounts /dev/shm from disk, not memory; {fix}")
    return out


def _images(obj: Obj) -> list[tuple[str, str]]:
    """(where, image) for every container and init container, each image once per template."""
    out: list[tuple[str, str]] = []
    for template in pods.pod_templates(obj):
        for c in pods.containers(template.spec, init=True):
            image = c.get("image")
            if isinstance(image, str) and all(image != seen for _, seen in out):
                out.append((template.where(c), image))
    return out


def image_registry(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    allowed = [str(a) for a in pods.seq(cfg.get("allowedRegistries"))]
    out: list[str] = []
    for where, image in _images(obj):
        registry = pods.parse_image(image).registry
        if not any(fnmatch(registry, pattern) for pattern in allowed):
            out.append(
                f"{pods.describe(obj)}: {where} pulls {image} from {registry}, which is not an allowed "
                f"registry ({', '.join(allowed) or 'none allowed'}); mirror the image to an allowed "
                "registry or add the registry to image-registry.allowedRegistries"
            )
    return out


def image_pinned(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for where, image in _images(obj):
        ref = pods.parse_image(image)
        if ref.digest is None and ref.tag in (None, "latest"):
            problem = "has no tag" if ref.tag is None else "uses the tag 'latest'"
            out.append(
                f"{pods.describe(obj)}: {where} image {image} {problem}, so every pull may run something "
                "else; pin a version tag (e.g. :v0.11.0) or a digest (@sha256:...) in the deploy template"
            )
    return out


def image_digest(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    tagged = sorted({image for _, image in _images(obj) if not pods.has_digest(image)})
    if not tagged:
        return []
    return [
        f"{pods.describe(obj)}: image(s) {', '.join(tagged)} are pinned by tag only; pin them by digest "
        "(<image>@sha256:...) in the deploy template so a re-pushed tag cannot change what runs"
    ]


def is_secret_name(name: str) -> bool:
    return secrets.is_secret_name(name)


def no_plain_secrets(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    """Secrets by name and by value, in env and on the command line (fleet.secrets)."""
    allowed = {str(n) for n in pods.seq(cfg.get("allowedNames"))}
    out: list[str] = []
    for template in pods.pod_templates(obj):
        for c in pods.containers(template.spec, init=True):
            where_c = f"{pods.describe(obj)}: {template.where(c)}"
            for env in map(pods.mapping, pods.seq(c.get("env"))):
                name = str(env.get("name") or "")
                if name in allowed:
                    continue
                where = f"{where_c} env {name}"
                fix = (
                    f"store it in a Secret and use valueFrom.secretKeyRef (or add {name} to "
                    "no-plain-secrets.allowedNames if it is not a secret)"
                )
                value = env.get("value")
                source = pods.mapping(env.get("valueFrom"))
                if is_secret_name(name) and value not in (None, ""):
                    out.append(f"{where} holds a plain value; {fix}")
                elif is_secret_name(name) and source and "secretKeyRef" not in source:
                    origin = next(iter(source), "?")
                    out.append(f"{where} comes from {origin}, which is not for secrets; {fix}")
                elif isinstance(value, str) and (shape := secrets.secret_kind(value)) is not None:
                    out.append(f"{where} holds what looks like {shape}; {fix}")
            argv = [str(t) for t in pods.seq(c.get("command")) + pods.seq(c.get("args"))]
            out += [
                f"{where_c} command line: {problem.replace(secrets.FIX, 'store it in a Secret')}"
                for problem in secrets.argv_secrets(argv)
            ]
    return out


def _serving_container(obj: Obj) -> tuple[pods.PodTemplate, Obj] | None:
    if not pods.is_workload(obj):
        return None
    pool_resource = pods.annotation(obj, "resource-name")
    for template in pods.pod_templates(obj):
        container = pods.engine_container(template.spec, pool_resource) if template.serves else None
        if container is not None and (pods.devices(container, pool_resource) or pool_resource):
            return template, container
    return None


def probes(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    found = _serving_container(obj)
    if found is None:
        return []
    template, c = found
    missing = [p for p in ("startupProbe", "readinessProbe", "livenessProbe") if not c.get(p)]
    if not missing:
        return []
    return [
        f"{pods.describe(obj)}: {template.where(c)} has no {', '.join(missing)}; a serving needs a startup "
        "probe (model loading), a readiness probe (routing) and a liveness probe (hung engines); "
        "render it from a deploy template so the platform adds them"
    ]


def startup_seconds(probe: Obj) -> int:
    period = pods.as_int(probe.get("periodSeconds")) or 10
    failures = pods.as_int(probe.get("failureThreshold")) or 3
    return period * failures


def startup_budget(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    found = _serving_container(obj)
    if found is None:
        return []
    template, c = found
    probe = pods.mapping(c.get("startupProbe"))
    if not probe:
        return []  # `probes` reports it
    floor = int(cfg.get("minStartupSeconds") or 0)
    required, why = floor, f"the minimum of {floor}s"
    weights = pods.annotation(obj, "weights-gib")
    try:
        per_node = float(weights) / pods.group_size(obj) if weights else 0.0
    except ValueError:
        per_node = 0.0
    load = math.ceil(per_node * float(cfg.get("loadSecondsPerGib") or 0))
    if load > required:
        required, why = load, f"{load}s to load {per_node:.0f} GiB of weights per node"
    budget = startup_seconds(probe)
    if budget >= required:
        return []
    period = pods.as_int(probe.get("periodSeconds")) or 10
    return [
        f"{pods.describe(obj)}: {template.where(c)} gets {budget}s to start (failureThreshold x "
        f"periodSeconds) but needs {why}; raise the deploy template's probes.startup_budget_seconds to "
        f"at least {required} (failureThreshold {math.ceil(required / period)} at {period}s)"
    ]


def workspace_regions(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    if not pods.is_workload(obj):
        return []
    lab = pods.labels(obj)
    workspace, region = lab.get(f"{LABEL}/workspace"), lab.get(f"{LABEL}/region")
    if workspace is None or region is None:
        return []  # ownership-labels reports it
    allowed = per_workspace(pods.mapping(cfg.get("allowedRegions")), str(workspace))
    if allowed is None:
        return []
    regions = [str(r) for r in pods.seq(allowed)]
    if str(region) in regions:
        return []
    return [
        f"{pods.describe(obj)}: workspace {workspace} may not deploy to region {region} (allowed: "
        f"{', '.join(regions) or 'none'}); place the serving in an allowed region or extend "
        f"workspace-regions.allowedRegions[{workspace}]"
    ]


def ownership_labels(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    k = pods.kind(obj)
    lab = pods.labels(obj)
    ours = lab.get("app.kubernetes.io/managed-by") == "modelfleet" or f"{LABEL}/serving" in lab
    if k == "Namespace":
        required: tuple[str, ...] = ("region",) if ours else ()
    elif k in pods.WORKLOAD_KINDS or (k in SERVING_KINDS and ours):
        required = OWNERSHIP
    else:
        required = ()
    out: list[str] = []
    missing = [f"{LABEL}/{key}" for key in required if not lab.get(f"{LABEL}/{key}")]
    if missing:
        out.append(
            f"{pods.describe(obj)}: metadata.labels lack {', '.join(missing)}; cost, audit and cleanup "
            "select on them: render the object through fleet.manifests (labels()) or add them"
        )
    for template in pods.pod_templates(obj):
        missing = [f"{LABEL}/{key}" for key in OWNERSHIP if not template.labels.get(f"{LABEL}/{key}")]
        if missing:
            out.append(
                f"{pods.describe(obj)}: the {template.role or 'pod'} template's labels lack "
                f"{', '.join(missing)}; pods are billed and audited by them: add them to the template"
            )
    return out


def ascend_a3_even_devices(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    if pods.pool_vendor(obj) != "ascend" or pods.annotation(obj, "accelerator-family") != "a3":
        return []
    found = _replica_devices(obj)
    if found is None or found[1] % 2 == 0:
        return []
    return [
        f"{pods.describe(obj)}: {found[1]} NPUs per pod on Ascend A3, which pairs two dies per chip; "
        f"use an even count ({found[1] + 1}) so no die is stranded"
    ]


def hami_custom_all_reduce(obj: Obj, cfg: Mapping[str, Any]) -> list[str]:
    if pods.pool_vendor(obj) != "nvidia" or pods.annotation(obj, "sharing") != "hami":
        return []
    found = _replica_devices(obj)
    if found is None:
        return []
    tokens = found[3]
    if pods.engine_of(obj, tokens) not in ("vllm", "sglang") or pods.layout(tokens).tensor < 2:
        return []
    if pods.flag(tokens, ("--disable-custom-all-reduce",)) is not None:
        return []
    return [
        f"{pods.describe(obj)}: tensor parallel {pods.layout(tokens).tensor} on HAMi-shared GPUs without "
        "--disable-custom-all-reduce; custom all-reduce uses CUDA IPC, which fails across vGPUs: add "
        "--disable-custom-all-reduce to the serving's extra_args"
    ]


CHECKS: dict[str, Check] = {
    "accelerator-resource": accelerator_resource,
    "parallelism-layout": parallelism_layout,
    "multi-node-group": multi_node_group,
    "shared-memory": shared_memory,
    "image-registry": image_registry,
    "image-pinned": image_pinned,
    "image-digest": image_digest,
    "no-plain-secrets": no_plain_secrets,
    "probes": probes,
    "startup-budget": startup_budget,
    "workspace-regions": workspace_regions,
    "ownership-labels": ownership_labels,
    "ascend-a3-even-devices": ascend_a3_even_devices,
    "hami-custom-all-reduce": hami_custom_all_reduce,
}
