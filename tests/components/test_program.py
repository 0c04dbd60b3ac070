"""The whole program (`components.program.main`, what `__main__.py` runs) for the demo stack."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.offline import PLACEHOLDER_KUBECONFIG, Capture, capture, capture_stack, run_program
from fleet.loader import stack_config
from fleet.pipeline import Rendering

from .conftest import STACKS
from .test_components import resource_type

PROVIDER = "pulumi:providers:kubernetes"
ROOT = STACKS.parent


def expected_types(rendering: Rendering) -> Counter[str]:
    """What the program must register for a rendering, counted per resource type."""
    fleet = rendering.fleet
    clusters = [r for r in fleet.regions.values() if r.runtime == "kubernetes"]  # local: no Pulumi
    on_clusters = [p for p in rendering.placements if fleet.regions[p.plan.region].runtime == "kubernetes"]
    want: Counter[str] = Counter(
        {
            "modelfleet:index:Region": len(clusters),
            PROVIDER: len(clusters),
            "modelfleet:index:GpuNodePool": len(fleet.pools),
            "modelfleet:index:ModelServing": len(on_clusters),
        }
    )
    for _, obj in rendering.objects():
        want[resource_type(obj)] += 1
    return want


def test_demo_resource_counts_per_type(demo_capture: Capture, demo_rendering: Rendering) -> None:
    got = Counter(r.type for r in demo_capture.resources)
    assert got == expected_types(demo_rendering)
    # The demo exercises every kind of object the components wrap.
    assert got["kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"] >= 1
    assert got["kubernetes:keda.sh/v1alpha1:ScaledObject"] >= 1
    assert got["kubernetes:apps/v1:Deployment"] >= 2
    assert got[PROVIDER] == 3


def test_demo_registers_exactly_the_rendered_manifests(
    demo_capture: Capture, demo_rendering: Rendering
) -> None:
    """What `pulumi up` would apply is what `fleet render` prints, object for object."""

    def key(obj: dict[str, Any]) -> str:
        return json.dumps(obj, sort_keys=True)

    k8s = [r for r in demo_capture.resources if r.type.startswith("kubernetes:")]
    assert sorted(key(r.props) for r in k8s) == sorted(key(obj) for _, obj in demo_rendering.objects())


def test_demo_urns_are_unique_and_engine_shaped(demo_capture: Capture) -> None:
    urns = [r.urn for r in demo_capture.resources]
    assert len(urns) == len(set(urns))
    for r in demo_capture.resources:
        assert r.urn.startswith("urn:pulumi:demo::modelfleet::")
        assert "pulumi:pulumi:Stack" not in r.urn
        if r.parent:
            parent_type = r.parent.split("::")[2]
            assert r.urn.split("::")[2] == f"{parent_type}${r.type}"
        assert r.urn.endswith(f"::{r.name}")


def test_every_kubernetes_object_uses_its_regions_provider(demo_capture: Capture) -> None:
    providers = {r.urn: r for r in demo_capture.by_type(PROVIDER)}
    k8s = [r for r in demo_capture.resources if r.type.startswith("kubernetes:")]
    assert k8s
    for r in k8s:
        assert r.provider, f"{r.urn} would use the default provider"
        provider = providers[r.provider.rsplit("::", 1)[0]]
        region = r.props["metadata"]["labels"]["modelfleet.io/region"]
        assert provider.name == region, r.urn


def test_every_serving_child_is_parented_and_waits_for_the_namespace(
    demo_capture: Capture,
) -> None:
    components = {r.urn: r for r in demo_capture.by_type("modelfleet:index:ModelServing")}
    namespaces = {r.name: r.urn for r in demo_capture.by_type("kubernetes:core/v1:Namespace")}
    for r in demo_capture.resources:
        if not r.type.startswith("kubernetes:") or r.type.endswith(":Namespace"):
            continue
        parent = components[r.parent]
        assert r.name.startswith(parent.name + "-")
        region = r.props["metadata"]["labels"]["modelfleet.io/region"]
        assert namespaces[f"{region}-namespace"] in r.dependencies


def test_workloads_wait_for_the_config_maps_their_pods_mount(demo_capture: Capture) -> None:
    config_maps = demo_capture.by_type("kubernetes:core/v1:ConfigMap")
    assert config_maps, "the demo has a MindIE serving with a launcher ConfigMap"
    kinds = ("Deployment", "LeaderWorkerSet")
    workloads = {r.parent: r for r in demo_capture.resources if r.type.split(":")[-1] in kinds}
    for cm in config_maps:
        workload = workloads[cm.parent]
        assert cm.urn in workload.dependencies
        volumes = workload.props["spec"]["template"]["spec"]["volumes"]
        assert cm.props["metadata"]["name"] in json.dumps(volumes)


def test_demo_exports_every_serving_in_every_region(demo_capture: Capture, demo_rendering: Rendering) -> None:
    endpoints = demo_capture.exports["endpoints"]
    regions = demo_rendering.fleet.regions
    want: dict[str, dict[str, list[str]]] = {}
    for p in demo_rendering.placements:
        if regions[p.plan.region].runtime == "kubernetes":  # a local region's replicas have own URLs
            want.setdefault(p.plan.serving, {}).setdefault(p.plan.region, []).append(p.endpoint)
    assert endpoints == want
    served = {(s, r) for s, regions in endpoints.items() for r in regions}
    placed = {
        (s.name, p.region)
        for s in demo_rendering.fleet.servings
        for p in s.placements
        if regions[p.region].runtime == "kubernetes"
    }
    assert served == placed
    assert any(len(regions) > 1 for regions in endpoints.values()), "demo has a multi-region serving"
    for urls in (u for regions in endpoints.values() for u in regions.values()):
        assert all(u.startswith("http://") and ".svc.cluster.local:" in u for u in urls)


def test_demo_exports_pool_use(demo_capture: Capture, demo_rendering: Rendering) -> None:
    pools = demo_capture.exports["pools"]
    assert set(pools) == set(demo_rendering.fleet.pools)
    for name, use in demo_rendering.plan.pools.items():
        assert pools[name]["usedDevices"] == use.used
        assert pools[name]["freeDevices"] == use.free


def test_kubeconfig_comes_from_the_config_secret_the_region_names() -> None:
    resources = capture(STACKS, "demo")
    config = stack_config(STACKS, "demo")
    for region in config["regions"]:
        if region.get("runtime") == "local":
            assert not [r for r in resources if r.type == PROVIDER and r.name == region["name"]]
            continue
        (provider,) = [r for r in resources if r.type == PROVIDER and r.name == region["name"]]
        if "kubeconfig_secret" in region["cluster"]:
            assert provider.props["kubeconfig"] == PLACEHOLDER_KUBECONFIG
        else:
            assert "kubeconfig" not in provider.props
            assert provider.props["context"] == region["cluster"]["context"]


def test_missing_kubeconfig_secret_fails_the_run() -> None:
    """Outside `capture` nothing fills in the secret: the program must not silently fall back to
    an ambient kubeconfig."""
    config = {f"modelfleet:{k}": v for k, v in stack_config(STACKS, "demo").items()}
    from components.program import main

    with pytest.raises(pulumi.ConfigMissingError, match="kubeconfig-cn-east"):
        run_program(lambda: main(STACKS), "demo", config)


def test_invalid_stack_fails_with_every_issue() -> None:
    config = stack_config(STACKS, "demo")
    pools = [dict(p) for p in config["pools"]]
    pools[0]["region"] = "mars"
    templates = [dict(t) for t in config["templates"]]
    templates[0]["engine"] = "no-such-engine"
    with pytest.raises(pulumi.RunError) as err:
        capture(STACKS, "demo", config_overrides={"pools": pools, "templates": templates})
    message = str(err.value)
    assert f"pools[{pools[0]['name']}].region: unknown region 'mars'" in message
    assert f"templates[{templates[0]['name']}]" in message
    assert message.startswith("stack 'demo': ")


def test_removing_a_config_key_fails_with_the_servings_that_need_it() -> None:
    with pytest.raises(pulumi.RunError, match=r"servings\[qwen25-7b\]\.template: unknown deploy template"):
        capture(STACKS, "demo", config_overrides={"modelfleet:templates": None})


def test_overrides_reach_the_program() -> None:
    config = stack_config(STACKS, "demo")
    regions = [json.loads(json.dumps(r)) for r in config["regions"]]
    regions[0]["cluster"]["cluster_identifier"] = "rotated-cluster-42"
    resources = capture(STACKS, "demo", config_overrides={"modelfleet:regions": regions})
    (provider,) = [r for r in resources if r.type == PROVIDER and r.name == regions[0]["name"]]
    assert provider.props["clusterIdentifier"] == "rotated-cluster-42"


def test_capture_is_repeatable(demo_capture: Capture) -> None:
    """set_mocks is process-global; a second capture must not see the first one's resources."""
    again = capture_stack(STACKS, "demo")
    assert again.resources == demo_capture.resources
    assert again.exports == demo_capture.exports


def test_main_module_registers_what_capture_captures(demo_capture: Capture) -> None:
    """`__main__.py` and `capture` run the same code path."""
    config = {f"modelfleet:{k}": v for k, v in stack_config(STACKS, "demo").items()}
    secrets = []
    for region in config["modelfleet:regions"]:
        if "kubeconfig_secret" in region.get("cluster", {}):
            key = f"modelfleet:{region['cluster']['kubeconfig_secret']}"
            config[key] = PLACEHOLDER_KUBECONFIG
            secrets.append(key)

    def program() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    ran = run_program(program, "demo", config, secrets)
    assert [r.urn for r in ran.resources] == [r.urn for r in demo_capture.resources]
    assert ran.resources == demo_capture.resources


def test_capture_rendering_matches_the_stack_capture(demo_components: Capture, demo_capture: Capture) -> None:
    def shape(c: Capture) -> list[tuple[str, str, str]]:
        return [(r.type, r.name, json.dumps(r.props, sort_keys=True)) for r in c.resources]

    assert shape(demo_components) == shape(demo_capture)
    assert all(r.urn.startswith("urn:pulumi:unit::") for r in demo_components.resources)


def test_stacks_dir_is_next_to_main() -> None:
    assert (ROOT / "__main__.py").is_file() and (ROOT / "Pulumi.yaml").is_file()
    assert Path(STACKS / "Pulumi.demo.yaml").is_file()
