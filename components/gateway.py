"""`MaasGateway`: the OpenAI-compatible gateway on one region's cluster.

The objects are exactly the dicts `fleet.gateway.region_objects` builds (Deployment, Service,
PodDisruptionBudget, HorizontalPodAutoscaler); this component only turns each into a typed
`pulumi_kubernetes` resource with a stable logical name (`<component>-<kind>`), the region's
provider, this component as parent and a dependency on the region's namespace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pulumi
import pulumi_kubernetes as k8s

from fleet.manifests import Manifest

TYPE = "modelfleet:index:MaasGateway"

_TYPED: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("v1", "Service"): k8s.core.v1.Service,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
}


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


class MaasGateway(pulumi.ComponentResource):
    """The gateway's Deployment, Service, PodDisruptionBudget and (when it autoscales) its HPA.

    When the HPA owns the replica count, the Deployment ignores changes to `spec.replicas` so that
    `pulumi up` does not scale the gateway back down in the middle of a peak.
    """

    resources: dict[str, pulumi.CustomResource]  # by kind
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    endpoint: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        objects: Sequence[Manifest],
        *,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        kinds = [str(m["kind"]) for m in objects]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"gateway {name!r} has two objects of one kind: {kinds}")
        autoscaled = "HorizontalPodAutoscaler" in kinds
        self.resources = {}
        for manifest in objects:
            api, kind = str(manifest["apiVersion"]), str(manifest["kind"])
            make = _TYPED.get((api, kind))
            if make is None:
                raise ValueError(f"gateway {name!r}: unexpected {kind} ({api})")
            after = [self.resources["Deployment"]] if kind == "HorizontalPodAutoscaler" else []
            child = pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=[*depends_on, *after],
                ignore_changes=["spec.replicas"] if autoscaled and kind == "Deployment" else None,
            )
            fields = {_snake(k): v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
            self.resources[kind] = make(f"{name}-{kind.lower()}", opts=child, **fields)
        deployment, service = self.resources.get("Deployment"), self.resources.get("Service")
        if not isinstance(deployment, k8s.apps.v1.Deployment) or not isinstance(service, k8s.core.v1.Service):
            raise ValueError(f"gateway {name!r} needs a Deployment and a Service, got {kinds}")
        self.deployment, self.service = deployment, service
        meta = next(m for m in objects if m["kind"] == "Service")
        port = meta["spec"]["ports"][0]["port"]
        url = f"http://{meta['metadata']['name']}.{meta['metadata']['namespace']}.svc.cluster.local:{port}/v1"
        # Known once the Service is registered: consumers of the endpoint depend on the Service.
        self.endpoint = service.urn.apply(lambda _: url)
        self.register_outputs({"endpoint": self.endpoint})
