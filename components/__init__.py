"""Pulumi components: thin adapters that turn the pure core's manifests into Kubernetes resources.

Everything a component applies is computed by `fleet` first (`fleet.pipeline.render_fleet`); the
components only give each object a stable logical name, its region's provider and its parent.
"""

from components.files import ModelFilesJob
from components.gateway import MaasGateway
from components.node_pool import GpuNodePool
from components.region import Region
from components.serving import ModelServing

__all__ = ["GpuNodePool", "MaasGateway", "ModelFilesJob", "ModelServing", "Region"]
