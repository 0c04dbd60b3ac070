"""`GET /api/regions`: where servings can run — each region of the stack at HEAD and its GPU pools,
with capacity, what the committed plan allocates, what is free, and the devices its replicas are
observed holding now (`in_use`). Any signed-in user may read it
(the deploy form picks a region and pool from it); model-store and cluster details stay with ops.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from fleet.stack import PoolFacts
from portal.api.common import Page, PageParams, page_params
from portal.auth import PrincipalDep, ServicesDep, SessionDep
from portal.observe.status import devices_in_use
from portal.serving_models import resolve_stack

router = APIRouter(prefix="/api", tags=["regions"])


class ControllersOut(BaseModel):
    leader_worker_set: bool = Field(description="multi-node replicas (LeaderWorkerSet) can run here")
    keda: bool = Field(description="servings can autoscale here (with prometheus)")
    prometheus: bool = Field(description="a Prometheus the autoscaler queries is configured")


class PoolOut(BaseModel):
    name: str
    accelerator: str = Field(description="vendor/model, e.g. nvidia/h100-80g")
    vendor: str
    vendor_name: str
    family: str
    devices_per_node: int
    nodes: int = Field(description="nodes counted for capacity (the autoscaler's maximum when it scales)")
    nodes_min: int | None = Field(description="the autoscaler's minimum, when the pool scales")
    memory_per_device_gib: float
    sharing: str = Field(description="none, or hami (fractional GPUs)")
    capacity: int = Field(description="devices: nodes x devices per node")
    allocated: int | None = Field(
        description="devices the committed servings use; null when the stack does not plan"
    )
    free: int | None
    peak: int | None = Field(description="allocated with every autoscaler at its maximum")
    in_use: int = Field(
        description="devices observed held now: nodes x devices of each replica that is scheduled "
        "(pulling, downloading, loading) or ready, as the region's observer reported it"
    )


class RegionOut(BaseModel):
    name: str
    display_name: str
    gateway_domain: str
    controllers: ControllersOut
    pools: list[PoolOut]


def _pool(p: PoolFacts, allocated: int | None, peak: int | None, in_use: int) -> PoolOut:
    spec = p.spec
    capacity = spec.devices
    return PoolOut(
        name=spec.name,
        accelerator=spec.accelerator,
        vendor=spec.vendor,
        vendor_name=p.vendor.display_name,
        family=p.family,
        devices_per_node=spec.devices_per_node,
        nodes=spec.node_count,
        nodes_min=None if isinstance(spec.nodes, int) else spec.nodes.min,
        memory_per_device_gib=p.memory_per_device_gib,
        sharing=spec.sharing,
        capacity=capacity,
        allocated=allocated,
        free=capacity - allocated if allocated is not None else None,
        peak=peak,
        in_use=in_use,
    )


@router.get("/regions", response_model=Page[RegionOut])
def list_regions(
    _: PrincipalDep,
    services: ServicesDep,
    session: SessionDep,
    paging: Annotated[PageParams, Depends(page_params)],
    stack: Annotated[
        str | None, Query(min_length=1, max_length=63, description="default: the only stack")
    ] = None,
) -> Page[RegionOut]:
    snapshot = services.repository.snapshot(resolve_stack(services.repository, stack))
    fleet = snapshot.fleet
    plan = snapshot.index.rendering.plan if snapshot.index.rendering is not None else None
    with session.begin():
        in_use = devices_in_use(session, snapshot.stack)
    regions: list[RegionOut] = []
    for region in fleet.regions.values():
        pools = []
        for p in fleet.pools.values():
            if p.spec.region != region.name:
                continue
            use = plan.pools.get(p.name) if plan is not None else None
            held = in_use.get((region.name, p.name), 0)
            pools.append(_pool(p, use.used if use else None, use.peak if use else None, held))
        regions.append(
            RegionOut(
                name=region.name,
                display_name=region.display_name or region.name,
                gateway_domain=region.gateway_domain,
                controllers=ControllersOut(
                    leader_worker_set=region.controllers.leader_worker_set,
                    keda=region.controllers.keda,
                    prometheus=region.prometheus_url is not None,
                ),
                pools=pools,
            )
        )
    page = regions[paging.offset : paging.offset + paging.page_size]
    return Page(items=page, total=len(regions), page=paging.page, page_size=paging.page_size)
