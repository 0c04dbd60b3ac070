"""Rules over the whole resource graph of a stack: what a stack policy sees.

A rule returns `StackMessage`s: the message (naming the resources and the fix), the URN to attach it
to (None for the stack as a whole) and the servings involved, so the portal's preflight keeps only
what concerns the serving being deployed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet.rules import pods
from fleet.rules.base import per_workspace
from fleet.rules.pods import LABEL, Obj


@dataclass(frozen=True, slots=True)
class StackResource:
    urn: str
    type: str
    props: Obj
    provider: str | None  # the provider's URN; None when the engine would pick a default one

    @property
    def name(self) -> str:
        parts = self.urn.split("::")
        return parts[3] if len(parts) > 3 else self.urn

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:")


@dataclass(frozen=True, slots=True)
class StackMessage:
    urn: str | None
    message: str
    servings: frozenset[str] = field(default_factory=frozenset)


StackCheck = Callable[[Sequence[StackResource], Mapping[str, Any]], list[StackMessage]]


def _is_default_provider(urn: str | None) -> bool:
    if not urn:
        return True
    name = urn.split("::")[3] if urn.count("::") >= 3 else urn
    return name == "default" or name.startswith("default_")


def explicit_provider(resources: Sequence[StackResource], cfg: Mapping[str, Any]) -> list[StackMessage]:
    return [
        StackMessage(
            r.urn,
            f"{r.type} {r.name} ({pods.describe(r.props)}) uses the default Kubernetes provider, i.e. "
            "whatever cluster the ambient kubeconfig points at; create it with the region's provider "
            "(ResourceOptions(provider=region.provider)) and set pulumi:disable-default-providers",
            frozenset(filter(None, [pods.labels(r.props).get(f"{LABEL}/serving")])),
        )
        for r in resources
        if r.is_kubernetes and _is_default_provider(r.provider)
    ]


@dataclass(frozen=True, slots=True)
class Workload:
    urn: str
    obj: Obj
    serving: str
    workspace: str
    region: str
    pool_resource: str | None

    @property
    def engine_argv(self) -> list[str]:
        templates = pods.pod_templates(self.obj)
        container = pods.engine_container(templates[0].spec, self.pool_resource) if templates else None
        return pods.argv(container) if container is not None else []

    @property
    def image(self) -> str:
        templates = pods.pod_templates(self.obj)
        container = pods.engine_container(templates[0].spec, self.pool_resource) if templates else None
        return str(container.get("image", "")) if container is not None else ""

    @property
    def devices_per_replica(self) -> int:
        size = pods.group_size(self.obj)
        total = 0
        for template in pods.pod_templates(self.obj):
            count = sum(pods.devices(c, self.pool_resource) for c in pods.containers(template.spec))
            total += count * (size - 1 if template.role == "worker" else 1)
        return total


def workloads(resources: Sequence[StackResource]) -> list[Workload]:
    out: list[Workload] = []
    for r in resources:
        if not (r.is_kubernetes and pods.is_workload(r.props)):
            continue
        lab = pods.labels(r.props)
        out.append(
            Workload(
                r.urn,
                r.props,
                str(lab.get(f"{LABEL}/serving") or pods.describe(r.props)),
                str(lab.get(f"{LABEL}/workspace") or "<no workspace>"),
                str(lab.get(f"{LABEL}/region") or ""),
                pods.annotation(r.props, "resource-name"),
            )
        )
    return out


def _autoscalers(resources: Sequence[StackResource]) -> dict[tuple[str, str, str], Obj]:
    """ScaledObjects by (region, namespace, target name)."""
    out: dict[tuple[str, str, str], Obj] = {}
    for r in resources:
        if r.is_kubernetes and pods.kind(r.props) == "ScaledObject":
            region = str(pods.labels(r.props).get(f"{LABEL}/region") or "")
            namespace = str(pods.at(r.props, "metadata", "namespace") or "")
            target = str(pods.at(r.props, "spec", "scaleTargetRef", "name") or "")
            out[(region, namespace, target)] = r.props
    return out


def _scaler(w: Workload, scalers: Mapping[tuple[str, str, str], Obj]) -> Obj | None:
    namespace = str(pods.at(w.obj, "metadata", "namespace") or "")
    return scalers.get((w.region, namespace, str(pods.at(w.obj, "metadata", "name") or "")))


def public_model_name(resources: Sequence[StackResource], cfg: Mapping[str, Any]) -> list[StackMessage]:
    by_name: dict[str, dict[str, list[Workload]]] = defaultdict(lambda: defaultdict(list))
    for w in workloads(resources):
        served = pods.flag(w.engine_argv, pods.SERVED_NAME)
        if served:
            by_name[served][w.serving].append(w)
    out: list[StackMessage] = []
    for served, servings in sorted(by_name.items()):
        if len(servings) < 2:
            continue

        def engine(w: Workload) -> str:
            noted = pods.annotation(w.obj, "engine")
            return noted or pods.engine_of(w.obj, w.engine_argv) or "unknown engine"

        engines = {engine(w).split()[0] for ws in servings.values() for w in ws}
        images: dict[str, set[str]] = defaultdict(set)
        for ws in servings.values():
            for w in ws:
                images[pods.annotation(w.obj, "accelerator") or w.pool_resource or "?"].add(w.image)
        clash = [accel for accel, seen in sorted(images.items()) if len(seen) > 1]
        if len(engines) < 2 and not clash:
            continue
        parts = []
        for name, ws in sorted(servings.items()):
            runs = sorted({f"{engine(w)} on {pods.annotation(w.obj, 'accelerator') or '?'}" for w in ws})
            parts.append(f"{name} ({', '.join(runs)})")
        what = "different engines" if len(engines) > 1 else f"different images on {', '.join(clash)}"
        last = sorted(servings)[-1]
        out.append(
            StackMessage(
                servings[last][0].urn,
                f"servings {' and '.join(parts)} all expose the model name {served!r} with {what}, so "
                "clients get different behaviour behind one name; give all but one a different "
                "public_model_name, or run them from one deploy template",
                frozenset(servings),
            )
        )
    return out


def workspace_devices(resources: Sequence[StackResource], cfg: Mapping[str, Any]) -> list[StackMessage]:
    limits = pods.mapping(cfg.get("maxDevices"))
    scalers = _autoscalers(resources)
    use: dict[str, list[tuple[Workload, int, int]]] = defaultdict(list)
    for w in workloads(resources):
        scaler = _scaler(w, scalers)
        top = pods.as_int(pods.at(scaler, "spec", "maxReplicaCount")) if scaler is not None else None
        use[w.workspace].append((w, max(pods.replicas(w.obj), top or 0), w.devices_per_replica))
    out: list[StackMessage] = []
    for workspace, items in sorted(use.items()):
        limit = pods.as_int(per_workspace(limits, workspace))
        total = sum(n * d for _, n, d in items)
        if limit is None or total <= limit:
            continue
        detail = ", ".join(f"{pods.describe(w.obj).split('/')[-1]} {n}x{d}" for w, n, d in items if n * d)
        out.append(
            StackMessage(
                None,
                f"workspace {workspace} would hold {total} accelerator devices ({detail}; autoscalers at "
                f"their maximum) but may hold {limit}; lower replicas or autoscaling.max_replicas, or "
                f"raise workspace-devices.maxDevices[{workspace}]",
                frozenset(w.serving for w, _, _ in items),
            )
        )
    return out


def public_model_replicas(resources: Sequence[StackResource], cfg: Mapping[str, Any]) -> list[StackMessage]:
    minimum = int(cfg.get("minReplicas") or 1)
    scalers = _autoscalers(resources)
    by_model: dict[str, list[tuple[Workload, int]]] = defaultdict(list)
    for w in workloads(resources):
        public = pods.annotation(w.obj, "public-model")
        if public:
            scaler = _scaler(w, scalers)
            floor = pods.as_int(pods.at(scaler, "spec", "minReplicaCount")) if scaler is not None else None
            by_model[public].append((w, floor if floor is not None else pods.replicas(w.obj)))
    out: list[StackMessage] = []
    for model, items in sorted(by_model.items()):
        total = sum(n for _, n in items)
        if total >= minimum:
            continue
        out.append(
            StackMessage(
                items[0][0].urn,
                f"public model {model!r} runs {total} replica(s) in total (fewer than {minimum}): one pod "
                "restart takes it offline for the minutes a model needs to load; raise replicas, add a "
                "placement, or set autoscaling.min_replicas",
                frozenset(w.serving for w, _ in items),
            )
        )
    return out


CHECKS: dict[str, StackCheck] = {
    "explicit-provider": explicit_provider,
    "public-model-name": public_model_name,
    "workspace-devices": workspace_devices,
    "public-model-replicas": public_model_replicas,
}
