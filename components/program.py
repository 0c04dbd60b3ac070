"""The Pulumi program: stack config -> fleet -> rendering -> components -> stack outputs.

`__main__.py` calls `main`; `components.offline` calls the same `main` under mocks, so what CI
captures is what `pulumi up` would register.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi

from components.files import ModelFilesJob
from components.gateway import MaasGateway
from components.node_pool import GpuNodePool
from components.region import Region
from components.serving import ModelServing
from fleet.errors import IssuesError
from fleet.gateway import gateway_objects
from fleet.loader import NAMESPACE, SECTIONS, read_model_files, read_servings
from fleet.manifests import object_name
from fleet.pipeline import Rendering, render_fleet
from fleet.stack import Fleet, build_fleet


def read_config(config: pulumi.Config | None = None) -> dict[str, Any]:
    """The `modelfleet:` sections (platform, regions, pools, templates) of the stack's config."""
    config = config if config is not None else pulumi.Config(NAMESPACE)
    out: dict[str, Any] = {}
    for key in SECTIONS:
        value = config.get_object(key)
        if value is not None:
            out[key] = value
    return out


def kubeconfig_secrets(fleet: Fleet, config: pulumi.Config | None = None) -> dict[str, pulumi.Output[str]]:
    """Kubeconfig per region that reads it from a config secret (regions using a context have
    none)."""
    config = config if config is not None else pulumi.Config(NAMESPACE)
    return {
        name: config.require_secret(region.cluster.kubeconfig_secret)
        for name, region in fleet.regions.items()
        if region.cluster is not None and region.cluster.kubeconfig_secret is not None
    }


def issues_message(stack: str, exc: IssuesError) -> str:
    lines = [f"  {issue}" for issue in exc.issues]
    noun = "problem" if len(lines) == 1 else "problems"
    return f"stack {stack!r}: {len(lines)} {exc.kind} {noun}:\n" + "\n".join(lines)


def deploy(
    rendering: Rendering, kubeconfigs: Mapping[str, pulumi.Input[str]] | None = None
) -> dict[str, Any]:
    """Create every component of a rendered fleet; export and return the stack outputs.

    Outputs: `endpoints` {serving: {region: [url, ...]}} (what the gateway routes to),
    `namespaces` {region: namespace}, `pools` {pool: {devices, usedDevices, freeDevices, ...}},
    when the stack runs the MaaS gateway (`platform.gateway`), `gateways` {region: in-cluster URL}
    and, when it copies model files (`stacks/<stack>/model-files/`), `modelFiles` {model: {region:
    Job name}}.
    """
    fleet = rendering.fleet
    if kubeconfigs is None:
        kubeconfigs = kubeconfig_secrets(fleet)
    regions: dict[str, Region] = {}
    for name, spec in fleet.regions.items():
        # `local` regions are applied by the control plane as processes, not by Pulumi.
        if spec.runtime == "kubernetes":
            regions[name] = Region(name, spec, rendering.namespaces[name], kubeconfig=kubeconfigs.get(name))
    pools = {
        name: GpuNodePool(name, facts, rendering.plan.pools[name]) for name, facts in fleet.pools.items()
    }
    endpoints: dict[str, dict[str, list[pulumi.Output[str]]]] = {}
    for placement in rendering.placements:
        plan = placement.plan
        if plan.region not in regions:
            continue  # a local region's placement
        region = regions[plan.region]
        serving = ModelServing(
            object_name(plan.serving, plan.pool),
            placement,
            provider=region.provider,
            depends_on=[region.namespace],
        )
        endpoints.setdefault(plan.serving, {}).setdefault(plan.region, []).append(serving.endpoint)
    gateways = {
        name: MaasGateway(
            f"{name}-gateway", objects, provider=regions[name].provider, depends_on=[regions[name].namespace]
        ).endpoint
        for name, objects in gateway_objects(fleet).items()
        if name in regions
    }
    files: dict[str, dict[str, pulumi.Output[str]]] = {}
    for job in rendering.files_jobs:
        region = regions[job.region]  # the core lists only kubernetes regions in model files
        copy = ModelFilesJob(job, provider=region.provider, depends_on=[region.namespace])
        files.setdefault(job.files, {})[job.region] = copy.job_name
    exports: dict[str, Any] = {
        "endpoints": endpoints,
        "namespaces": {name: region.namespace_name for name, region in regions.items()},
        "pools": {
            name: {
                "region": pool.region,
                "resourceName": pool.resource_name,
                "devices": pool.devices,
                "usedDevices": pool.used_devices,
                "freeDevices": pool.free_devices,
                "peakDevices": pool.peak_devices,
            }
            for name, pool in pools.items()
        },
    }
    if gateways:  # stacks without `platform.gateway` export what they always did
        exports["gateways"] = gateways
    if files:  # likewise without model files
        exports["modelFiles"] = files
    for key, value in exports.items():
        pulumi.export(key, value)
    return exports


def main(stacks_dir: Path) -> dict[str, Any]:
    """Read the stack's config once, build and render the fleet, deploy it."""
    stack = pulumi.get_stack()
    config = pulumi.Config(NAMESPACE)
    try:
        fleet = build_fleet(
            stack, read_config(config), read_servings(stacks_dir, stack), read_model_files(stacks_dir, stack)
        )
        rendering = render_fleet(fleet)
    except IssuesError as exc:
        raise pulumi.RunError(issues_message(stack, exc)) from None
    for warning in rendering.warnings:
        pulumi.log.warn(str(warning))
    return deploy(rendering, kubeconfig_secrets(fleet, config))
