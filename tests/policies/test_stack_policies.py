"""Each stack policy over `PolicyResource`s built from the demo's rendered objects: as rendered
(passes) and with the mistake it exists for (fails, naming the resources and the fix)."""

from __future__ import annotations

import copy
from typing import Any

from pulumi_policy import PolicyResource

from fleet.pipeline import Rendering
from policies import validators as v
from policies.offline import resource_options
from tests.policies.helpers import objects, policy_resource, run_stack_policy, urn_of, workload


def graph(objs: list[dict[str, Any]]) -> list[Any]:
    return [policy_resource(o) for o in objs]


REGION_PROVIDER = "urn:pulumi:test::modelfleet::modelfleet:index:Region$pulumi:providers:kubernetes::cn-east"
DEFAULT_PROVIDER = "urn:pulumi:test::modelfleet::pulumi:providers:kubernetes::default_4_34_2"


def test_explicit_provider(demo: Rendering) -> None:
    objs = objects(demo)
    assert run_stack_policy(v.explicit_provider, graph(objs)) == []
    service = next(o for o in objs if o["kind"] == "Service")
    for provider in (None, DEFAULT_PROVIDER):  # offline capture: none; the engine: its default provider
        resources = [policy_resource(o, provider if o is service else REGION_PROVIDER) for o in objs]
        [(urn, message)] = run_stack_policy(v.explicit_provider, resources)
        assert urn == urn_of(service)
        assert f"(Service modelfleet/{service['metadata']['name']}) uses the default Kubernetes" in message
        assert "ResourceOptions(provider=region.provider)" in message


def test_provider_resources_themselves_are_not_checked() -> None:
    kind = "pulumi:providers:kubernetes"
    provider = PolicyResource(kind, {}, REGION_PROVIDER, "cn-east", resource_options(), None, None, [], {})
    assert run_stack_policy(v.explicit_provider, [provider]) == []


def test_public_model_name_conflicts(demo: Rendering) -> None:
    objs = objects(demo)
    assert run_stack_policy(v.public_model_name, graph(objs)) == []
    # A second serving exposing 'qwen3-32b' (the SGLang serving's public name) on vLLM.
    clone = workload(demo, "qwen25-7b", "east-h100")
    clone["metadata"]["name"] = "other-east-h100"
    clone["metadata"]["labels"]["modelfleet.io/serving"] = "other"
    args = clone["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--served-model-name") + 1] = "qwen3-32b"
    [(urn, message)] = run_stack_policy(v.public_model_name, graph([*objs, clone]))
    assert urn == urn_of(next(o for o in objs if o["metadata"]["name"] == "qwen3-32b-sglang-east-h100"))
    assert "servings other (vllm 0.33.0 on nvidia/h100-80g) and qwen3-32b-sglang (sglang 0.5.23" in message
    assert "expose the model name 'qwen3-32b' with different engines" in message


def test_public_model_name_allows_one_serving_on_many_vendors(demo: Rendering) -> None:
    # qwen25-7b runs different images on H100 and C500 under one name: one serving, no conflict.
    objs = objects(demo)
    names = [o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"]
    assert {"qwen25-7b-east-h100", "qwen25-7b-north-c500"} <= set(names)
    assert run_stack_policy(v.public_model_name, graph(objs)) == []


def test_public_model_name_conflicting_images_on_one_accelerator(demo: Rendering) -> None:
    objs = objects(demo)
    clone = copy.deepcopy(next(o for o in objs if o["metadata"]["name"] == "qwen25-7b-east-h100"))
    clone["metadata"]["name"] = "twin-east-h100"
    clone["metadata"]["labels"]["modelfleet.io/serving"] = "twin"
    clone["spec"]["template"]["spec"]["containers"][0]["image"] = "docker.io/vllm/vllm-openai:v0.11.0"
    [(_, message)] = run_stack_policy(v.public_model_name, graph([*objs, clone]))
    assert "with different images on nvidia/h100-80g" in message


def test_workspace_devices(demo: Rendering) -> None:
    resources = graph(objects(demo))
    assert run_stack_policy(v.workspace_devices, resources) == []  # no table: no limit
    assert run_stack_policy(v.workspace_devices, resources, {"maxDevices": {"demo": 64}}) == []
    [(urn, message)] = run_stack_policy(v.workspace_devices, resources, {"maxDevices": {"*": 16}})
    assert urn is None  # the workspace as a whole, not one resource
    # 16 (deepseek) + 2x1 + 1 (qwen25-7b) + 4 (mindie) + 2x2 + 1 (llama) + 1 (qwen3-32b) + 1 (biren)
    # + 3x2 (qwen3-8b-shared at its autoscaler's maximum of 3)
    assert message.startswith("workspace demo would hold 36 accelerator devices (")
    assert "qwen3-8b-shared-east-l20-shared 3x2" in message
    assert "but may hold 16; lower replicas or autoscaling.max_replicas" in message


def test_public_model_replicas(demo: Rendering) -> None:
    resources = graph(objects(demo))
    found = run_stack_policy(v.public_model_replicas, resources)
    assert sorted(m.split("'")[1] for _, m in found) == ["deepseek-r1", "qwen2.5-72b-instruct", "qwen3-32b"]
    assert run_stack_policy(v.public_model_replicas, resources, {"minReplicas": 1}) == []
