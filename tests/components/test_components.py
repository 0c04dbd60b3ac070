"""Each component under mocks: providers, parents, names and props of what it registers."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components import GpuNodePool, ModelServing, Region
from components.offline import Capture, CapturedResource, DuplicateUrnError, run_program
from fleet.manifests import LWS_API, object_name
from fleet.pipeline import RenderedPlacement, Rendering

PROVIDER = "pulumi:providers:kubernetes"


def resource_type(manifest: dict[str, Any]) -> str:
    """Pulumi type token of a Kubernetes object (the core group is spelled `core/v1`)."""
    api = manifest["apiVersion"]
    return f"kubernetes:{'core/v1' if api == 'v1' else api}:{manifest['kind']}"


def provider_urn(ref: str) -> str:
    """`<urn>::<id>` -> `<urn>` (the id never contains `::`)."""
    return ref.rsplit("::", 1)[0]


def by_urn(capture: Capture) -> dict[str, CapturedResource]:
    return {r.urn: r for r in capture.resources}


def children(capture: Capture, parent: CapturedResource) -> list[CapturedResource]:
    return [r for r in capture.resources if r.parent == parent.urn]


def one(capture: Capture, type_: str, name: str) -> CapturedResource:
    found = [r for r in capture.resources if r.type == type_ and r.name == name]
    assert len(found) == 1, (type_, name, [r.urn for r in capture.resources])
    return found[0]


def placement(rendering: Rendering, *, kind: str) -> RenderedPlacement:
    for p in rendering.placements:
        if any(o["kind"] == kind for o in p.objects):
            return p
    raise AssertionError(f"the demo stack has no placement with a {kind}")


# ---------------------------------------------------------------------------------------- Region


def test_region_provider_per_cluster_with_its_identifier(demo_rendering: Rendering) -> None:
    fleet = demo_rendering.fleet
    clusters = {name: r.cluster for name, r in fleet.regions.items() if r.cluster is not None}
    assert len(clusters) < len(fleet.regions), "demo has a local region (no cluster, no provider)"

    def program() -> dict[str, Any]:
        made = {
            name: Region(
                name,
                spec,
                demo_rendering.namespaces[name],
                kubeconfig=pulumi.Output.secret(f"kubeconfig of {name}")
                if clusters[name].kubeconfig_secret
                else None,
            )
            for name, spec in fleet.regions.items()
            if name in clusters
        }
        return {name: r.cluster_identifier for name, r in made.items()}

    cap = run_program(program, "unit")
    providers = cap.by_type(PROVIDER)
    assert sorted(p.name for p in providers) == sorted(clusters)
    for p in providers:
        cluster = clusters[p.name]
        region = one(cap, "modelfleet:index:Region", p.name)
        assert p.parent == region.urn
        assert p.urn.endswith(f"::modelfleet:index:Region${PROVIDER}::{p.name}")
        assert p.props["clusterIdentifier"] == cluster.cluster_identifier
        assert p.props["enableServerSideApply"] == "true"  # providers take JSON-encoded config
        if cluster.kubeconfig_secret:
            assert p.props["kubeconfig"] == f"kubeconfig of {p.name}"
            assert "context" not in p.props
        else:
            assert p.props["context"] == cluster.context
            assert "kubeconfig" not in p.props
    assert cap.exports == {n: c.cluster_identifier for n, c in clusters.items()}
    assert {c.context for c in clusters.values()} != {None}, "demo uses a context"


def test_region_namespace_uses_the_region_provider(demo_rendering: Rendering) -> None:
    fleet = demo_rendering.fleet

    def program() -> None:
        for name in demo_rendering.namespaces:  # the cluster regions: a local one has no namespace
            Region(name, fleet.regions[name], demo_rendering.namespaces[name], kubeconfig="kc")

    cap = run_program(program, "unit")
    for name in demo_rendering.namespaces:
        region = one(cap, "modelfleet:index:Region", name)
        provider = one(cap, PROVIDER, name)
        ns = one(cap, "kubernetes:core/v1:Namespace", f"{name}-namespace")
        assert ns.parent == region.urn
        assert provider_urn(ns.provider) == provider.urn
        assert ns.props == demo_rendering.namespaces[name]
        assert {c.urn for c in children(cap, region)} == {provider.urn, ns.urn}


def test_region_refuses_to_run_without_its_kubeconfig(demo_rendering: Rendering) -> None:
    name, spec = next((n, r) for n, r in demo_rendering.fleet.regions.items() if r.cluster.kubeconfig_secret)
    with pytest.raises(ValueError, match=str(spec.cluster.kubeconfig_secret)):
        run_program(lambda: Region(name, spec, demo_rendering.namespaces[name]) and None)


# ----------------------------------------------------------------------------------- GpuNodePool


def test_node_pool_outputs_capacity_and_use(demo_rendering: Rendering) -> None:
    fleet, plan = demo_rendering.fleet, demo_rendering.plan

    def program() -> dict[str, Any]:
        out = {}
        for name, facts in fleet.pools.items():
            pool = GpuNodePool(name, facts, plan.pools[name])
            out[name] = {
                "devices": pool.devices,
                "devicesPerNode": pool.devices_per_node,
                "nodeCount": pool.node_count,
                "used": pool.used_devices,
                "free": pool.free_devices,
                "resource": pool.resource_name,
                "vendor": pool.vendor,
                "family": pool.family,
            }
        return out

    cap = run_program(program, "unit")
    assert sorted(r.name for r in cap.by_type("modelfleet:index:GpuNodePool")) == sorted(fleet.pools)
    assert not [r for r in cap.resources if r.custom], "a pool creates no Kubernetes object"
    for name, facts in fleet.pools.items():
        got = cap.exports[name]
        assert got["devices"] == facts.spec.node_count * facts.spec.devices_per_node
        assert got["devicesPerNode"] == facts.spec.devices_per_node
        assert got["nodeCount"] == facts.spec.node_count
        assert got["used"] == plan.pools[name].used
        assert got["used"] + got["free"] == got["devices"]
        assert got["resource"] == facts.resource_name
        assert got["vendor"] == facts.spec.accelerator.split("/")[0]
        assert got["family"] == facts.family
    assert any(v["used"] > 0 for v in cap.exports.values())


def test_node_pool_refuses_another_pools_use(demo_rendering: Rendering) -> None:
    pools = list(demo_rendering.fleet.pools.values())
    other = demo_rendering.plan.pools[pools[1].name]
    with pytest.raises(ValueError, match="pool use"):
        run_program(lambda: GpuNodePool(pools[0].name, pools[0], other) and None)


# ---------------------------------------------------------------------------------- ModelServing


def _serving_program(rendering: Rendering, chosen: RenderedPlacement) -> Any:
    spec = rendering.fleet.regions[chosen.plan.region]

    def program() -> dict[str, Any]:
        region = Region(spec.name, spec, rendering.namespaces[spec.name], kubeconfig="kc")
        name = object_name(chosen.plan.serving, chosen.plan.pool)
        serving = ModelServing(name, chosen, provider=region.provider, depends_on=[region.namespace])
        return {"endpoint": serving.endpoint}

    return program


@pytest.mark.parametrize("kind", ["Deployment", "LeaderWorkerSet", "ScaledObject"])
def test_serving_children(demo_rendering: Rendering, kind: str) -> None:
    chosen = placement(demo_rendering, kind=kind)
    cap = run_program(_serving_program(demo_rendering, chosen), "unit")
    name = object_name(chosen.plan.serving, chosen.plan.pool)
    component = one(cap, "modelfleet:index:ModelServing", name)
    provider = one(cap, PROVIDER, chosen.plan.region)
    namespace = one(cap, "kubernetes:core/v1:Namespace", f"{chosen.plan.region}-namespace")
    kids = children(cap, component)
    assert len(kids) == len(chosen.objects)
    for child in kids:
        assert child.custom
        assert child.type.startswith("kubernetes:")
        assert child.name.startswith(f"{name}-")
        assert provider_urn(child.provider) == provider.urn
        assert namespace.urn in child.dependencies
    # Every manifest is registered unchanged, under the type its apiVersion and kind name.
    want = {resource_type(m): m for m in chosen.objects}
    assert {c.type: c.props for c in kids} == want
    assert cap.exports == {"endpoint": chosen.endpoint}
    # Replicas belong to the autoscaler when there is one; `pulumi up` must not reset them.
    autoscaled = any(m["kind"] == "ScaledObject" for m in chosen.objects)
    for child in kids:
        workload = child.props["kind"] in ("Deployment", "LeaderWorkerSet")
        assert child.ignore_changes == (("spec.replicas",) if autoscaled and workload else ())


def test_multi_node_serving_is_a_leader_worker_set_custom_resource(
    demo_rendering: Rendering,
) -> None:
    chosen = placement(demo_rendering, kind="LeaderWorkerSet")
    cap = run_program(_serving_program(demo_rendering, chosen), "unit")
    name = object_name(chosen.plan.serving, chosen.plan.pool)
    lws = one(cap, "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet", f"{name}-leaderworkerset")
    assert lws.props["apiVersion"] == LWS_API == "leaderworkerset.x-k8s.io/v1"
    assert lws.props["kind"] == "LeaderWorkerSet"
    assert lws.props["spec"]["leaderWorkerTemplate"]["size"] == chosen.plan.nodes > 1
    assert isinstance(lws.props["spec"]["replicas"], int)
    assert not cap.by_type("kubernetes:apps/v1:Deployment")


def test_deployment_props_equal_the_pure_manifest(demo_rendering: Rendering) -> None:
    chosen = placement(demo_rendering, kind="Deployment")
    cap = run_program(_serving_program(demo_rendering, chosen), "unit")
    (deployment,) = cap.by_type("kubernetes:apps/v1:Deployment")
    (manifest,) = [m for m in chosen.objects if m["kind"] == "Deployment"]
    assert deployment.props == manifest
    container = deployment.props["spec"]["template"]["spec"]["containers"][0]
    assert (
        container["resources"]["limits"]
        == manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )
    assert deployment.urn == (
        "urn:pulumi:unit::modelfleet::modelfleet:index:ModelServing$kubernetes:apps/v1:Deployment"
        f"::{object_name(chosen.plan.serving, chosen.plan.pool)}-deployment"
    )


def test_two_servings_with_the_same_name_collide(demo_rendering: Rendering) -> None:
    """Child names carry the component's name; reusing a component name is refused, as the engine
    would refuse it."""
    first, second = demo_rendering.placements[0], demo_rendering.placements[1]
    spec = demo_rendering.fleet.regions[first.plan.region]

    def program() -> None:
        region = Region(spec.name, spec, demo_rendering.namespaces[spec.name], kubeconfig="kc")
        ModelServing("same", first, provider=region.provider)
        ModelServing("same", second, provider=region.provider)

    with pytest.raises(DuplicateUrnError, match="ModelServing::same"):
        run_program(program, "unit")


def test_distinct_servings_with_equal_objects_do_not_collide(demo_rendering: Rendering) -> None:
    chosen = demo_rendering.placements[0]
    spec = demo_rendering.fleet.regions[chosen.plan.region]

    def program() -> None:
        region = Region(spec.name, spec, demo_rendering.namespaces[spec.name], kubeconfig="kc")
        ModelServing("a", chosen, provider=region.provider)
        ModelServing("b", chosen, provider=region.provider)

    cap = run_program(program, "unit")
    assert len(cap.by_type("modelfleet:index:ModelServing")) == 2
    assert len({r.urn for r in cap.resources}) == len(cap.resources)
