"""Starting the local runtime with the portal (`portal.app.STARTERS`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select

from fleet.errors import FleetError
from portal.observe.local import supervisor
from portal.observe.local.leases import Leases
from portal.observe.local.logs import runtime_root
from portal.services import Services
from store.models import ServingPlacement

log = logging.getLogger("modelfleet.portal.local")


def has_local_regions(services: Services) -> bool:
    """A stack declares a `local` region, or local placements are left to supervise (or stop)."""
    with services.sessions() as session:
        rows = session.scalars(select(ServingPlacement.id).where(ServingPlacement.runtime == "local"))
        if rows.first() is not None:
            return True
    for stack in services.repository.stacks():
        try:
            regions = services.repository.snapshot(stack).fleet.regions
        except FleetError:
            continue  # a stack that does not build has no region to supervise
        if any(region.runtime == "local" for region in regions.values()):
            return True
    return False


def local_runtime_starter(services: Services) -> Callable[[], None] | None:
    """For the app's STARTERS: supervise local regions' processes when the stacks have one (and
    `local_runtime_enabled`). Stopping it leaves the engines running for the next start to adopt."""
    if not services.settings.local_runtime_enabled or not has_local_regions(services):
        return None
    runtime = supervisor.Supervisor(
        services.sessions, runtime_root(services.settings.data_dir), Leases(services.engine)
    )
    services.extras["local_runtime"] = runtime
    log.info("local runtime started (%s)", runtime.root)
    return supervisor.start(runtime)
