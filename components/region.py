"""`Region`: one cluster, reached through its own Kubernetes provider, and the serving namespace."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from fleet import spec
from fleet.manifests import Manifest

TYPE = "modelfleet:index:Region"


class Region(pulumi.ComponentResource):
    """The provider for one region's cluster and the namespace every serving there lives in.

    The provider is named after the region and carries the cluster's `cluster_identifier`, so
    rotating the kubeconfig updates the provider in place instead of replacing every object on the
    cluster. Server-side apply is on. The namespace is kept when the region leaves the stack
    (`retain_on_delete`): it also holds objects ops manage by hand, such as the model-store
    credentials Secret, and deleting a namespace deletes everything in it.
    """

    provider: k8s.Provider
    namespace: k8s.core.v1.Namespace
    namespace_name: pulumi.Output[str]
    cluster_identifier: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        region: spec.Region,
        namespace: Manifest,
        *,
        kubeconfig: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        cluster = region.cluster
        if cluster is None:
            raise ValueError(f"region {region.name!r} runs locally (runtime: local): it has no cluster")
        if cluster.kubeconfig_secret is not None and kubeconfig is None:
            raise ValueError(
                f"region {region.name!r} reads its kubeconfig from the config secret "
                f"{cluster.kubeconfig_secret!r}; pass its value"
            )
        self.provider = k8s.Provider(
            name,
            cluster_identifier=cluster.cluster_identifier,
            kubeconfig=kubeconfig if cluster.kubeconfig_secret is not None else None,
            context=cluster.context,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=namespace["metadata"],
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, retain_on_delete=True),
        )
        self.namespace_name = pulumi.Output.from_input(region.namespace)
        self.cluster_identifier = pulumi.Output.from_input(cluster.cluster_identifier)
        self.register_outputs(
            {"namespace": self.namespace_name, "clusterIdentifier": self.cluster_identifier}
        )
