"""The MaaS gateway on the clusters: its manifests (pure, schema-checked) and the `MaasGateway`
component under mocks, alone and in the whole program for the demo stack with a gateway section."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components import MaasGateway, Region
from components.offline import Capture, CapturedResource, capture_stack, run_program
from fleet.errors import SpecError
from fleet.gateway import HEALTH_PATH, NAME, gateway_objects, region_objects
from fleet.kube import validate_manifest
from fleet.loader import stack_config
from fleet.pipeline import Rendering
from fleet.spec import Gateway, Platform
from fleet.stack import build_fleet
from portal.settings import Settings

from .conftest import STACKS
from .test_components import PROVIDER, children, one, provider_urn, resource_type

TYPE = "modelfleet:index:MaasGateway"
IMAGE = "registry.example.com/modelfleet/portal:0.1.0"
GATEWAY: dict[str, Any] = {"image": IMAGE}


def demo_platform(**gateway: Any) -> dict[str, Any]:
    platform = dict(stack_config(STACKS, "demo").get("platform") or {})
    return {**platform, "gateway": {**GATEWAY, **gateway}}


def by_kind(objects: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def objects_for(demo_rendering: Rendering, **gateway: Any) -> tuple[dict[str, Any], ...]:
    region = next(iter(demo_rendering.fleet.regions.values()))
    platform = Platform.model_validate(demo_platform(**gateway))
    assert platform.gateway is not None
    return region_objects(platform.gateway, region, platform)


# ---------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    ("version", "gateway"),
    [
        ("1.33", {}),
        ("1.33", {"autoscaling": None, "replicas": 2, "service_type": "LoadBalancer"}),
        ("1.28", {"env": {"MODELFLEET_GATEWAY_MAX_ATTEMPTS": "2"}}),
    ],
)
def test_every_object_passes_the_kubernetes_schema(
    demo_rendering: Rendering, version: str, gateway: dict[str, Any]
) -> None:
    region = next(iter(demo_rendering.fleet.regions.values()))
    platform = Platform.model_validate(
        {"kubernetes_version": version, "image_pull_secrets": ["regcred"], "gateway": {**GATEWAY, **gateway}}
    )
    assert platform.gateway is not None
    objects = region_objects(platform.gateway, region, platform)
    for obj in objects:
        assert validate_manifest(obj, version) == [], obj["kind"]
    pre_stop = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["lifecycle"][
        "preStop"
    ]
    assert ("sleep" in pre_stop) == (version >= "1.30")  # the sleep action exists from 1.30 on


def test_deployment_runs_the_gateway_with_connections_from_secrets(demo_rendering: Rendering) -> None:
    objects = by_kind(objects_for(demo_rendering, pepper={"name": "portal-secrets", "key": "pepper"}))
    region = next(iter(demo_rendering.fleet.regions.values()))
    deployment = objects["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "gateway"]
    assert container["args"] == ["--host", "0.0.0.0", "--port", "8080"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELFLEET_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "modelfleet-gateway", "key": "database-url"}
    }
    assert env["MODELFLEET_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "modelfleet-gateway", "key": "redis-url"}
    }
    assert env["MODELFLEET_PEPPER"]["valueFrom"] == {
        "secretKeyRef": {"name": "portal-secrets", "key": "pepper"}
    }
    assert env["MODELFLEET_GATEWAY_REGION"]["value"] == region.name
    assert env["MODELFLEET_GATEWAY_REPLICAS"]["value"] == "10"  # the autoscaler's maximum
    assert not any("value" in e and "://" in e["value"] for e in container["env"]), "no URL in plain text"
    # Every MODELFLEET_ variable is a real portal setting (a typo would be silently ignored).
    for name in env:
        if name.startswith("MODELFLEET_"):
            assert name.removeprefix("MODELFLEET_").lower() in Settings.model_fields, name
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    # Labels: the selector picks the template's pods and nothing else's.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    assert {o["metadata"]["namespace"] for o in objects.values()} == {region.namespace}
    assert {o["metadata"]["name"] for o in objects.values()} == {NAME}


def test_autoscaler_targets_the_deployment_on_cpu(demo_rendering: Rendering) -> None:
    objects = by_kind(
        objects_for(
            demo_rendering, autoscaling={"min_replicas": 3, "max_replicas": 12, "cpu_utilization": 60}
        )
    )
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
        }
    ]
    assert objects["Deployment"]["spec"]["replicas"] == 3
    fixed = by_kind(objects_for(demo_rendering, autoscaling=None, replicas=4))
    assert "HorizontalPodAutoscaler" not in fixed and fixed["Deployment"]["spec"]["replicas"] == 4


def test_gateway_spec_errors_name_the_field() -> None:
    config = stack_config(STACKS, "demo")
    for gateway, path in [
        ({**GATEWAY, "regions": ["cn-east", "mars"]}, "platform.gateway.regions[1]"),
        ({**GATEWAY, "autoscaling": {"min_replicas": 5, "max_replicas": 2}}, "platform.gateway.autoscaling"),
        ({**GATEWAY, "cpu": "lots"}, "platform.gateway.cpu"),
        ({"replicas": 2}, "platform.gateway.image"),
        ({**GATEWAY, "env": {"BAD-NAME": "x"}}, "platform.gateway.env"),
    ]:
        with pytest.raises(SpecError) as err:
            build_fleet("demo", {**config, "platform": {"gateway": gateway}}, [])
        assert [i.path for i in err.value.issues] == [path], gateway


def test_no_gateway_section_means_no_gateway_objects(demo_rendering: Rendering) -> None:
    assert demo_rendering.fleet.platform.gateway is None
    assert gateway_objects(demo_rendering.fleet) == {}


# ----------------------------------------------------------------------------------- component


def test_component_children_provider_and_replicas_left_to_the_autoscaler(demo_rendering: Rendering) -> None:
    fleet = demo_rendering.fleet
    name, spec = next(iter(fleet.regions.items()))
    objects = objects_for(demo_rendering)

    def program() -> dict[str, Any]:
        region = Region(name, spec, demo_rendering.namespaces[name], kubeconfig="kc")
        gateway = MaasGateway(
            f"{name}-gateway", objects, provider=region.provider, depends_on=[region.namespace]
        )
        return {"endpoint": gateway.endpoint}

    cap = run_program(program, "unit")
    component = one(cap, TYPE, f"{name}-gateway")
    provider = one(cap, PROVIDER, name)
    namespace = one(cap, "kubernetes:core/v1:Namespace", f"{name}-namespace")
    kids = {c.props["kind"]: c for c in children(cap, component)}
    assert set(kids) == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for kind, child in kids.items():
        assert child.urn.endswith(f"::{TYPE}${resource_type(child.props)}::{name}-gateway-{kind.lower()}")
        assert provider_urn(child.provider) == provider.urn
        assert namespace.urn in child.dependencies
        assert child.props == by_kind(objects)[kind]  # registered unchanged
    assert kids["Deployment"].ignore_changes == ("spec.replicas",)
    assert kids["Deployment"].urn in kids["HorizontalPodAutoscaler"].dependencies
    assert cap.exports == {"endpoint": f"http://{NAME}.{spec.namespace}.svc.cluster.local:8080/v1"}


def test_component_refuses_objects_it_does_not_know(demo_rendering: Rendering) -> None:
    name, spec = next(iter(demo_rendering.fleet.regions.items()))
    objects = (*objects_for(demo_rendering), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})

    def program() -> None:
        region = Region(name, spec, demo_rendering.namespaces[name], kubeconfig="kc")
        MaasGateway("g", objects, provider=region.provider)

    with pytest.raises(ValueError, match="unexpected ConfigMap"):
        run_program(program, "unit")


# ---------------------------------------------------------------------------------- the program


@pytest.fixture(scope="module")
def gateway_capture() -> Capture:
    """The real program for the demo stack with a gateway in two of its three regions."""
    platform = demo_platform(regions=["cn-east", "cn-north"])
    return capture_stack(STACKS, "demo", config_overrides={"platform": platform})


def test_program_runs_a_gateway_in_the_chosen_regions(
    gateway_capture: Capture, demo_capture: Capture
) -> None:
    gateways = gateway_capture.by_type(TYPE)
    assert sorted(g.name for g in gateways) == ["cn-east-gateway", "cn-north-gateway"]
    for gateway in gateways:
        region = gateway.name.removesuffix("-gateway")
        provider = one(gateway_capture, PROVIDER, region)
        for child in children(gateway_capture, gateway):
            assert provider_urn(child.provider) == provider.urn
            assert child.props["metadata"]["labels"]["modelfleet.io/region"] == region
    assert gateway_capture.exports["gateways"] == {
        region: f"http://{NAME}.modelfleet.svc.cluster.local:8080/v1" for region in ("cn-east", "cn-north")
    }

    # Everything else is what the stack registers without a gateway.
    def others(c: Capture) -> list[CapturedResource]:
        return [r for r in c.resources if TYPE not in r.urn]

    assert others(gateway_capture) == others(demo_capture)
    assert {k: v for k, v in gateway_capture.exports.items() if k != "gateways"} == demo_capture.exports


def test_demo_stack_without_a_gateway_exports_no_gateways(demo_capture: Capture) -> None:
    assert demo_capture.by_type(TYPE) == []
    assert "gateways" not in demo_capture.exports


def test_registered_gateway_objects_are_the_pure_core_manifests(gateway_capture: Capture) -> None:
    config = stack_config(STACKS, "demo")
    fleet = build_fleet("demo", {**config, "platform": demo_platform(regions=["cn-east", "cn-north"])}, [])
    want = sorted(json.dumps(o, sort_keys=True) for objs in gateway_objects(fleet).values() for o in objs)
    got = sorted(
        json.dumps(r.props, sort_keys=True) for r in gateway_capture.resources if TYPE in r.urn and r.custom
    )
    assert got == want


def test_gateway_spec_defaults_are_sensible() -> None:
    gateway = Gateway(image=IMAGE)
    assert (gateway.min_replicas, gateway.max_replicas) == (2, 10)
    assert gateway.database_url.name == gateway.redis_url.name == gateway.pepper.name == "modelfleet-gateway"
