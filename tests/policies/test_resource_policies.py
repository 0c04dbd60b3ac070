"""Each resource policy, called like the engine calls it (dict props behind the unknown-checking proxy,
a collecting reporter), on a rendered object of the demo stack: once as rendered (passes), once with the
one mistake the policy exists for (fails, naming the resource and the fix)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.pipeline import Rendering
from policies import validators as v
from tests.policies.helpers import run_resource_policy, workload

H100 = ("qwen25-7b", "east-h100")
LWS = ("deepseek-r1", "east-h100")
HAMI = ("qwen3-8b-shared", "east-l20-shared")
ASCEND_A3 = ("llama31-8b-ascend", "south-a3")
ASCEND_OVERRIDE = ("llama31-8b-ascend", "south-910b")  # pool resource_name huawei.com/ascend-1980


def engine(obj: dict[str, Any], role: str = "") -> dict[str, Any]:
    if obj["kind"] == "LeaderWorkerSet":
        key = "leaderTemplate" if role != "worker" else "workerTemplate"
        container: dict[str, Any] = obj["spec"]["leaderWorkerTemplate"][key]["spec"]["containers"][0]
        return container
    c: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return c


@pytest.mark.parametrize("placement", [H100, LWS, HAMI, ASCEND_A3, ASCEND_OVERRIDE])
def test_every_resource_policy_passes_the_rendered_demo_workloads(
    demo: Rendering, placement: tuple[str, str]
) -> None:
    obj = workload(demo, *placement)
    allowed = {"allowedRegistries": ["docker.io", "quay.io", "swr.*.myhuaweicloud.com"]}
    for policy in v.POLICIES:
        if isinstance(policy, v.ResourceValidationPolicy) and policy.name != "image-digest":
            config = allowed if policy.name == "image-registry" else None
            assert run_resource_policy(policy, obj, config) == [], policy.name


def test_policies_ignore_what_is_not_a_kubernetes_object(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["resources"] = {"limits": {"amd.com/gpu": "1"}}
    assert run_resource_policy(v.accelerator_resource, obj, type_="modelfleet:index:ModelServing") == []
    assert run_resource_policy(v.accelerator_resource, {"kubeconfig": "x"}, type_="pulumi:providers:x") == []


# ------------------------------------------------------------------------------ accelerator-resource


def test_accelerator_resource_refuses_another_vendors_resource(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["resources"] = {"requests": {"amd.com/gpu": "1"}, "limits": {"amd.com/gpu": "1"}}
    [message] = run_resource_policy(v.accelerator_resource, obj)
    assert message.startswith(
        "Deployment modelfleet/qwen25-7b-east-h100: container engine requests amd.com/gpu"
    )
    assert "request nvidia.com/gpu instead" in message


def test_accelerator_resource_wants_requests_equal_to_limits(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["resources"]["requests"] = {}
    [message] = run_resource_policy(v.accelerator_resource, obj)
    assert "requests no nvidia.com/gpu but limits 1" in message
    assert "set requests and limits both to 1" in message


def test_accelerator_resource_follows_the_pools_device_plugin(demo: Rendering) -> None:
    obj = workload(demo, *ASCEND_OVERRIDE)
    assert run_resource_policy(v.accelerator_resource, obj) == []
    resources = {"huawei.com/Ascend910": "1"}
    engine(obj)["resources"] = {"requests": resources, "limits": resources}
    [message] = run_resource_policy(v.accelerator_resource, obj)
    assert "advertises huawei.com/ascend-1980; request huawei.com/ascend-1980" in message


def test_accelerator_resource_wants_devices_on_the_engine(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["resources"] = {}
    [message] = run_resource_policy(v.accelerator_resource, obj)
    assert "pod template holds no nvidia.com/gpu" in message


def test_accelerator_resource_without_facts_refuses_mixed_vendors(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    del obj["metadata"]["annotations"]
    both = {"nvidia.com/gpu": "1", "huawei.com/Ascend910": "1"}
    engine(obj)["resources"] = {"requests": both, "limits": both}
    [message] = run_resource_policy(v.accelerator_resource, obj)
    assert "mixes vendors' resources" in message


# -------------------------------------------------------------------------------- parallelism-layout


def test_parallelism_layout_counts_every_pod_of_a_group(demo: Rendering) -> None:
    obj = workload(demo, *LWS)  # tensor 8 x pipeline 2 over two 8-GPU pods
    assert run_resource_policy(v.parallelism_layout, obj) == []
    engine(obj)["args"] += ["--data-parallel-size", "2"]
    [message] = run_resource_policy(v.parallelism_layout, obj)
    assert "tensor 8 x pipeline 2 x data 2 = 32 devices but a replica holds 16 (2 pod(s) x 8)" in message


def test_parallelism_layout_tensor_divides_the_devices_per_node(demo: Rendering) -> None:
    obj = workload(demo, *HAMI)  # tensor 2 on 2 GPUs
    resources = {"nvidia.com/gpu": "3"}
    engine(obj)["resources"] = {"requests": resources, "limits": resources}
    product, divides = run_resource_policy(v.parallelism_layout, obj)
    assert "tensor 2 x pipeline 1 x data 1 = 2 devices but a replica holds 3" in product
    assert divides == (
        "Deployment modelfleet/qwen3-8b-shared-east-l20-shared: tensor parallel 2 does not divide the 3 "
        "devices of each node; use a tensor parallel size that divides 3 and split the rest with pipeline"
    )


def test_parallelism_layout_checks_nnodes_against_the_group(demo: Rendering) -> None:
    obj = workload(demo, *LWS)
    args = engine(obj)["args"]
    args[args.index("--nnodes") + 1] = "4"
    [message] = run_resource_policy(v.parallelism_layout, obj)
    assert "--nnodes 4 but a replica has 2 pod(s)" in message


# ---------------------------------------------------------------------------------- multi-node-group


def test_multi_node_group_wants_the_group_restart_policy(demo: Rendering) -> None:
    obj = workload(demo, *LWS)
    assert run_resource_policy(v.multi_node_group, obj) == []
    obj["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "None"
    [message] = run_resource_policy(v.multi_node_group, obj)
    assert message.startswith("LeaderWorkerSet modelfleet/deepseek-r1-east-h100: restartPolicy is None")
    assert "restartPolicy: RecreateGroupOnPodRestart" in message


def test_multi_node_group_refuses_a_multi_node_deployment(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["args"] += ["--nnodes", "2"]
    [message] = run_resource_policy(v.multi_node_group, obj)
    assert "spans 2 nodes (--nnodes) in a Deployment; multi-node replicas must be LeaderWorkerSets" in message


# ------------------------------------------------------------------------------------ shared-memory


@pytest.mark.parametrize("role", ["leader", "worker"])
def test_shared_memory_wants_dev_shm_on_every_accelerator_pod(demo: Rendering, role: str) -> None:
    obj = workload(demo, *LWS)
    assert run_resource_policy(v.shared_memory, obj) == []
    c = engine(obj, role)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/dev/shm"]
    [message] = run_resource_policy(v.shared_memory, obj)
    assert f"{role} container engine has no /dev/shm mount; mount an emptyDir {{medium: Memory" in message


def test_shared_memory_must_be_memory_backed(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    volumes = obj["spec"]["template"]["spec"]["volumes"]
    next(vol for vol in volumes if vol["name"] == "dshm")["emptyDir"] = {}
    [message] = run_resource_policy(v.shared_memory, obj)
    assert "mounts /dev/shm from disk, not memory" in message


# ---------------------------------------------------------------------------------------- images


def test_image_registry_is_configurable(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    assert run_resource_policy(v.image_registry, obj) == []  # docker.io is allowed by default
    engine_msg, fetch_msg = run_resource_policy(
        v.image_registry, obj, {"allowedRegistries": ["*.corp.example"]}
    )
    assert "container engine pulls docker.io/vllm/vllm-openai:v0.33.0 from docker.io" in engine_msg
    assert "not an allowed registry (*.corp.example); mirror the image" in engine_msg
    assert "container model-fetch pulls docker.io/peakcom/s5cmd:v2.3.0" in fetch_msg


def test_image_registry_reports_each_container(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    obj["spec"]["template"]["spec"]["initContainers"][0]["image"] = "evil.example.org/s5cmd:v2.3.0"
    [message] = run_resource_policy(v.image_registry, obj)
    assert "container model-fetch pulls evil.example.org/s5cmd:v2.3.0 from evil.example.org" in message


@pytest.mark.parametrize(
    "image", ["docker.io/vllm/vllm-openai:latest", "vllm/vllm-openai", "localhost:5000/vllm"]
)
def test_image_pinned_refuses_floating_images(demo: Rendering, image: str) -> None:
    obj = workload(demo, *H100)
    assert run_resource_policy(v.image_pinned, obj) == []
    engine(obj)["image"] = image
    [message] = run_resource_policy(v.image_pinned, obj)
    assert f"image {image} " in message and "pin a version tag" in message


def test_image_pinned_accepts_a_digest(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["image"] = "docker.io/vllm/vllm-openai@sha256:" + "a" * 64
    assert run_resource_policy(v.image_pinned, obj) == []


def test_image_digest_advises_digests(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    [message] = run_resource_policy(v.image_digest, obj)
    assert "pinned by tag only; pin them by digest" in message
    for c in [engine(obj), obj["spec"]["template"]["spec"]["initContainers"][0]]:
        c["image"] = c["image"] + "@sha256:" + "b" * 64
    assert run_resource_policy(v.image_digest, obj) == []


# -------------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("name", ["HF_TOKEN", "OPENAI_API_KEY", "DB_PASSWORD", "MY_SECRET", "APIKEY"])
def test_no_plain_secrets_refuses_plain_values(demo: Rendering, name: str) -> None:
    obj = workload(demo, *H100)
    assert run_resource_policy(v.no_plain_secrets, obj) == []
    engine(obj)["env"].append({"name": name, "value": "s3cr3t"})
    [message] = run_resource_policy(v.no_plain_secrets, obj)
    assert f"container engine env {name} holds a plain value" in message
    assert "valueFrom.secretKeyRef" in message


def test_no_plain_secrets_wants_secret_refs_not_config_maps(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    ref = {"configMapKeyRef": {"name": "c", "key": "k"}}
    engine(obj)["env"].append({"name": "HF_TOKEN", "valueFrom": ref})
    [message] = run_resource_policy(v.no_plain_secrets, obj)
    assert "comes from configMapKeyRef, which is not for secrets" in message


def test_no_plain_secrets_leaves_look_alikes_and_allowed_names(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    engine(obj)["env"] += [
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "MONKEY_PATCH", "value": "1"},
        {"name": "CACHE_KEY_PREFIX", "value": "x"},
    ]
    [message] = run_resource_policy(v.no_plain_secrets, obj)
    assert "CACHE_KEY_PREFIX" in message
    assert run_resource_policy(v.no_plain_secrets, obj, {"allowedNames": ["CACHE_KEY_PREFIX"]}) == []


# ------------------------------------------------------------------------------------------ probes


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_are_required_on_serving_containers(demo: Rendering, probe: str) -> None:
    obj = workload(demo, *LWS)
    assert run_resource_policy(v.probes, obj) == []  # LWS workers serve no HTTP: no probes needed
    del engine(obj)[probe]
    [message] = run_resource_policy(v.probes, obj)
    assert message.startswith(
        f"LeaderWorkerSet modelfleet/deepseek-r1-east-h100: leader container engine has no {probe}"
    )


def test_startup_budget_floor_is_configurable(demo: Rendering) -> None:
    obj = workload(demo, *H100)  # 7B: the renderer gives 360 s
    assert run_resource_policy(v.startup_budget, obj) == []
    [message] = run_resource_policy(v.startup_budget, obj, {"minStartupSeconds": 900})
    assert "gets 360s to start (failureThreshold x periodSeconds) but needs the minimum of 900s" in message
    assert "at least 900 (failureThreshold 90 at 10s)" in message


def test_startup_budget_scales_with_the_weights_per_node(demo: Rendering) -> None:
    obj = workload(demo, *LWS)  # 687 GiB (FP8 + 10 % for scales) over two nodes
    assert run_resource_policy(v.startup_budget, obj) == []
    engine(obj)["startupProbe"]["failureThreshold"] = 40
    [message] = run_resource_policy(v.startup_budget, obj)
    assert "gets 400s to start" in message and "needs 688s to load 344 GiB of weights per node" in message


# ------------------------------------------------------------------------------- workspace-regions


def test_workspace_regions(demo: Rendering) -> None:
    obj = workload(demo, *H100)  # workspace demo, region cn-east
    assert run_resource_policy(v.workspace_regions, obj) == []  # no table: no limit
    assert run_resource_policy(v.workspace_regions, obj, {"allowedRegions": {"demo": ["cn-east"]}}) == []
    [message] = run_resource_policy(v.workspace_regions, obj, {"allowedRegions": {"*": ["cn-north"]}})
    assert "workspace demo may not deploy to region cn-east (allowed: cn-north)" in message


# -------------------------------------------------------------------------------- ownership-labels


def test_ownership_labels_on_objects_and_pod_templates(demo: Rendering) -> None:
    obj = workload(demo, *H100)
    del obj["metadata"]["labels"]["modelfleet.io/workspace"]
    del obj["spec"]["template"]["metadata"]["labels"]["modelfleet.io/region"]
    first, second = run_resource_policy(v.ownership_labels, obj)
    assert "metadata.labels lack modelfleet.io/workspace" in first
    assert "the pod template's labels lack modelfleet.io/region" in second


def test_ownership_labels_on_services(demo: Rendering) -> None:
    service = next(o for o in demo.placements[0].objects if o["kind"] == "Service")
    assert run_resource_policy(v.ownership_labels, service) == []
    service = {
        **service,
        "metadata": {**service["metadata"], "labels": {"app.kubernetes.io/managed-by": "modelfleet"}},
    }
    [message] = run_resource_policy(v.ownership_labels, service)
    assert "lack modelfleet.io/workspace, modelfleet.io/serving, modelfleet.io/region" in message


# --------------------------------------------------------------------------------------- advisories


def test_ascend_a3_odd_device_count_is_advised_against(demo: Rendering) -> None:
    obj = workload(demo, *ASCEND_A3)
    assert run_resource_policy(v.ascend_a3_even_devices, obj) == []
    resources = {"huawei.com/Ascend910": "3"}
    engine(obj)["resources"] = {"requests": resources, "limits": resources}
    [message] = run_resource_policy(v.ascend_a3_even_devices, obj)
    assert "3 NPUs per pod on Ascend A3" in message and "use an even count (4)" in message


def test_hami_tensor_parallel_wants_disable_custom_all_reduce(demo: Rendering) -> None:
    obj = workload(demo, *HAMI)  # the vendor quirk added the flag
    assert run_resource_policy(v.hami_custom_all_reduce, obj) == []
    engine(obj)["args"].remove("--disable-custom-all-reduce")
    [message] = run_resource_policy(v.hami_custom_all_reduce, obj)
    assert "tensor parallel 2 on HAMi-shared GPUs without --disable-custom-all-reduce" in message


def test_unknown_values_surface_like_the_engine_reports_them(demo: Rendering) -> None:
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

    obj = workload(demo, *H100)
    engine(obj)["image"] = UNKNOWN_STRING_VALUE
    with pytest.raises(UnknownValueError):
        run_resource_policy(v.image_pinned, obj)
