"""`GpuNodePool`: what one pool of accelerator nodes offers and how much of it the plan uses.

Nodes are not created by Modelfleet: they come from the cloud's node groups, Karpenter or the
datacenter, and the pool's `node_selector` and `taints` describe how to find them. So this component
creates no Kubernetes object; it records the pool's capacity and the planner's use of it as outputs
(visible in `pulumi stack output` and the console, and for other stacks through stack references).
"""

from __future__ import annotations

import pulumi

from fleet.planner import PoolUse
from fleet.stack import PoolFacts

TYPE = "modelfleet:index:GpuNodePool"


class GpuNodePool(pulumi.ComponentResource):
    region: pulumi.Output[str]
    vendor: pulumi.Output[str]
    family: pulumi.Output[str]
    resource_name: pulumi.Output[str]
    devices_per_node: pulumi.Output[int]
    node_count: pulumi.Output[int]
    devices: pulumi.Output[int]
    used_devices: pulumi.Output[int]
    free_devices: pulumi.Output[int]
    peak_devices: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        pool: PoolFacts,
        use: PoolUse,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        if use.pool != pool.name:
            raise ValueError(f"pool use is for {use.pool!r}, not {pool.name!r}")
        spec = pool.spec
        self.region = pulumi.Output.from_input(spec.region)
        self.vendor = pulumi.Output.from_input(spec.vendor)
        self.family = pulumi.Output.from_input(pool.family)
        self.resource_name = pulumi.Output.from_input(pool.resource_name)
        self.devices_per_node = pulumi.Output.from_input(spec.devices_per_node)
        self.node_count = pulumi.Output.from_input(spec.node_count)
        self.devices = pulumi.Output.from_input(use.capacity)
        self.used_devices = pulumi.Output.from_input(use.used)
        self.free_devices = pulumi.Output.from_input(use.free)
        self.peak_devices = pulumi.Output.from_input(use.peak)
        self.register_outputs(
            {
                "region": self.region,
                "vendor": self.vendor,
                "family": self.family,
                "resourceName": self.resource_name,
                "devicesPerNode": self.devices_per_node,
                "nodeCount": self.node_count,
                "devices": self.devices,
                "usedDevices": self.used_devices,
                "freeDevices": self.free_devices,
                "peakDevices": self.peak_devices,
            }
        )
