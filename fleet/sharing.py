"""HAMi device sharing: the planner's slice of each device, requested from HAMi.

A pool with `sharing: hami` hands out virtual devices; without a memory share the pod may use the
whole card, so the memory the planner fitted the model into (`memory_per_device_gib`, the slice) is
requested as HAMi's memory resource, and `hami_cores_percent` as its cores resource, for every vendor
whose HAMi resource names are known (`hami_shares` in fleet/data/vendors.yaml). Units differ per
vendor: NVIDIA and Ascend count MiB, MetaX GiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fleet.stack import PoolFacts


@dataclass(frozen=True, slots=True)
class Shares:
    resources: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


NONE = Shares()


def shares(pool: PoolFacts) -> Shares:
    """HAMi memory and cores resources (per device) and the pod annotations they need."""
    if pool.spec.sharing != "hami":
        return NONE
    known = pool.vendor.hami_shares
    if known is None:
        return NONE
    gib = pool.memory_per_device_gib
    amount = math.floor(gib * 1024) if known.memory_unit == "MiB" else max(1, math.floor(gib))
    resources = {known.memory_resource.format(resource=pool.resource_name): str(amount)}
    annotations: dict[str, str] = {}
    if known.cores_resource is not None and pool.spec.hami_cores_percent is not None:
        resources[known.cores_resource.format(resource=pool.resource_name)] = str(
            pool.spec.hami_cores_percent
        )
        annotations.update(known.cores_annotations)
    return Shares(resources, annotations)


def unknown(pool: PoolFacts) -> bool:
    """A HAMi pool whose vendor's memory resource is not known: its slice is not enforced."""
    return pool.spec.sharing == "hami" and pool.vendor.hami_shares is None
