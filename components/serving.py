"""`ModelServing`: one placement of a serving (a serving on one pool) as Kubernetes resources.

The objects are exactly the dicts `fleet.pipeline.render_fleet` produced for the placement; this
component only turns each into a `pulumi_kubernetes` resource with a stable logical name
(`<component>-<kind>`), the region's provider, this component as parent, and a dependency on the
region's namespace (the workload also waits for the ConfigMaps its pods mount).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pulumi
import pulumi_kubernetes as k8s

from fleet.manifests import Manifest
from fleet.pipeline import RenderedPlacement

TYPE = "modelfleet:index:ModelServing"
WORKLOAD_KINDS = ("Deployment", "LeaderWorkerSet")
AUTOSCALER_KIND = "ScaledObject"
CONFIG_KINDS = ("ConfigMap", "Secret")


def child_name(component: str, manifest: Manifest) -> str:
    """Logical name of the resource for `manifest`: URNs leave the parent's name out, so each
    child carries its component's name."""
    return f"{component}-{str(manifest['kind']).lower()}"


_TYPED: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _resource(name: str, m: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """The `pulumi_kubernetes` resource for one manifest: a typed class for built-in kinds, a
    `CustomResource` for the rest (LeaderWorkerSet, KEDA ScaledObject)."""
    api, kind = str(m["apiVersion"]), str(m["kind"])
    fields = {_snake(k): v for k, v in m.items() if k not in ("apiVersion", "kind")}
    typed = _TYPED.get((api, kind))
    if typed is not None:
        return typed(name, opts=opts, **fields)
    if not set(fields) <= {"metadata", "spec"}:
        raise ValueError(f"{kind} {name!r}: a custom resource takes metadata and spec only")
    return k8s.apiextensions.CustomResource(name, api_version=api, kind=kind, opts=opts, **fields)


class ModelServing(pulumi.ComponentResource):
    """The workload (Deployment or LeaderWorkerSet), Service, PodDisruptionBudget and, when the
    serving autoscales, KEDA ScaledObject of one placement.

    When a ScaledObject owns the replica count, the workload ignores changes to `spec.replicas`
    so that `pulumi up` does not fight the autoscaler.
    """

    resources: dict[str, pulumi.CustomResource]  # by kind
    workload: pulumi.CustomResource
    service: k8s.core.v1.Service
    endpoint: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        placement: RenderedPlacement,
        *,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        kinds = [str(m["kind"]) for m in placement.objects]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"placement {name!r} has two objects of one kind: {kinds}")
        autoscaled = AUTOSCALER_KIND in kinds
        self.resources = {}
        # Objects come in apply order: configuration the pods mount first, then the workload.
        for manifest in placement.objects:
            kind = str(manifest["kind"])
            workload = kind in WORKLOAD_KINDS
            config = [r for k, r in self.resources.items() if k in CONFIG_KINDS] if workload else []
            opts_child = pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[*depends_on, *config],
                ignore_changes=["spec.replicas"] if autoscaled and workload else None,
            )
            self.resources[kind] = _resource(child_name(name, manifest), manifest, opts_child)
        workloads = [self.resources[k] for k in WORKLOAD_KINDS if k in self.resources]
        if len(workloads) != 1 or "Service" not in self.resources:
            raise ValueError(f"placement {name!r} needs one workload and a Service, got {kinds}")
        self.workload = workloads[0]
        service = self.resources["Service"]
        if not isinstance(service, k8s.core.v1.Service):
            raise TypeError(f"placement {name!r}: the Service is a {type(service).__name__}")
        self.service = service
        url = placement.endpoint
        # Known once the Service is registered: consumers of the endpoint depend on the Service.
        self.endpoint = service.urn.apply(lambda _: url)
        self.register_outputs({"endpoint": self.endpoint})
