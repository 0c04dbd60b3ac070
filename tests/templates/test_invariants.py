"""Invariants a golden update cannot bless, checked over every golden case and the demo stack."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from fleet import sharing
from fleet.errors import IssuesError, RenderError, SpecError
from fleet.flags import load_schema, validate_args
from fleet.manifests import LWS_API
from fleet.pipeline import RenderedPlacement, Rendering, build, render_fleet
from tests.conftest import STACKS
from tests.fixtures import factories as f
from tests.templates.cases import BY_ID, CASE_IDS, rendering

ALL = [*CASE_IDS, "demo"]
# The flag each engine listens on, and the value it must have: in a pod, 127.0.0.1 is unreachable.
LISTEN_FLAG = {"vllm": "--host", "sglang": "--host", "mindie": "--ip-address"}
ACCELERATOR_RESOURCES = (
    "nvidia.com/",
    "huawei.com/",
    "amd.com/",
    "metax-tech.com/",
    "birentech.com/",
    "hygon.com/",
    "mthreads.com/",
    "iluvatar.",
    "cambricon.com/",
)


@pytest.fixture(params=ALL)
def rendered(request: pytest.FixtureRequest, demo: Rendering) -> Rendering:
    return demo if request.param == "demo" else rendering(request.param)


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if obj["kind"] == "Deployment":
        yield "single", obj["spec"]["template"]["spec"]
    elif obj["kind"] == "LeaderWorkerSet":
        lwt = obj["spec"]["leaderWorkerTemplate"]
        yield "leader", lwt["leaderTemplate"]["spec"]
        yield "worker", lwt["workerTemplate"]["spec"]


def pods(p: RenderedPlacement) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in p.objects:
        yield from pod_specs(obj)


def engine_container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["containers"] if c["name"] == "engine"]
    assert isinstance(container, dict)
    return container


def test_rendering_is_not_empty(rendered: Rendering) -> None:
    assert rendered.placements
    regions = rendered.fleet.regions
    for p in rendered.placements:  # a local region's placements are processes: no pods
        assert any(True for _ in pods(p)) == (regions[p.plan.region].runtime == "kubernetes")


def test_non_nvidia_pods_never_request_nvidia_gpus(rendered: Rendering) -> None:
    for p in rendered.placements:
        if rendered.fleet.pools[p.plan.pool].spec.vendor == "nvidia":
            continue
        for role, pod in pods(p):
            for c in pod["containers"] + pod.get("initContainers", []):
                for section in ("requests", "limits"):
                    asked = c.get("resources", {}).get(section, {})
                    assert not any(k.startswith("nvidia.com/") for k in asked), (p.plan.pool, role, c)


def test_accelerator_requests_equal_limits_on_the_pools_resource(rendered: Rendering) -> None:
    for p in rendered.placements:
        pool = rendered.fleet.pools[p.plan.pool]
        for role, pod in pods(p):
            resources = engine_container(pod)["resources"]
            # The devices, and on HAMi pools the planner's slice of each (memory, cores).
            expected = {pool.resource_name: str(p.plan.devices_per_pod), **sharing.shares(pool).resources}
            accel = {
                section: {k: v for k, v in resources[section].items() if k.startswith(ACCELERATOR_RESOURCES)}
                for section in ("requests", "limits")
            }
            assert accel == {"requests": expected, "limits": expected}, (p.plan.pool, role)
            for init in pod.get("initContainers", []):
                held = [
                    k for s in init["resources"].values() for k in s if k.startswith(ACCELERATOR_RESOURCES)
                ]
                assert not held, "the fetch container must not hold accelerators"


def test_every_pod_is_guaranteed(rendered: Rendering) -> None:
    """Kubernetes' QoS rule: every container, init containers included, sets CPU and memory requests
    equal to limits; one that does not makes the whole pod Burstable (or BestEffort)."""
    for p in rendered.placements:
        for role, pod in pods(p):
            for c in pod["containers"] + pod.get("initContainers", []):
                requests, limits = c["resources"]["requests"], c["resources"]["limits"]
                for resource in ("cpu", "memory"):
                    assert requests.get(resource) is not None, (p.plan.serving, role, c["name"], resource)
                    assert requests[resource] == limits[resource], (p.plan.serving, role, c["name"], resource)


def test_pod_memory_holds_its_shared_memory(rendered: Rendering) -> None:
    for p in rendered.placements:
        for _, pod in pods(p):
            [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
            limit = int(engine_container(pod)["resources"]["limits"]["memory"].removesuffix("Gi"))
            assert limit >= int(shm["emptyDir"]["sizeLimit"].removesuffix("Gi")) + 8


def test_every_multi_node_member_carries_the_pools_network(rendered: Rendering) -> None:
    for p in rendered.placements:
        if not p.plan.multi_node:
            continue
        pool = rendered.fleet.pools[p.plan.pool]
        net = pool.spec.network
        for obj in p.objects:
            if obj["kind"] != "LeaderWorkerSet":
                continue
            lwt = obj["spec"]["leaderWorkerTemplate"]
            for template in (lwt["leaderTemplate"], lwt["workerTemplate"]):
                pod, engine = template["spec"], engine_container(template["spec"])
                env = {e["name"]: e.get("value") for e in engine["env"]}
                if net.interface is not None:
                    sockets = [k for k in env if k.endswith("_SOCKET_IFNAME")]
                    assert sockets and all(env[k] == net.interface for k in sockets)
                if net.rdma_resource is not None:
                    assert engine["resources"]["limits"][net.rdma_resource] == str(net.rdma_count)
                    assert engine["resources"]["requests"][net.rdma_resource] == str(net.rdma_count)
                    assert "IPC_LOCK" in engine["securityContext"]["capabilities"]["add"]
                if net.ib_gid_index is not None:
                    assert env["NCCL_IB_GID_INDEX"] == str(net.ib_gid_index)
                assert pod.get("hostNetwork", False) == net.host_network
                if net.host_network:
                    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
                annotations = template["metadata"].get("annotations", {})
                assert net.pod_annotations.items() <= annotations.items()


def test_workers_on_a_shared_cache_wait_for_the_leaders_fetch(rendered: Rendering) -> None:
    """Weights are fetched once per cache: on a shared (PVC) cache only the leader fetches."""
    for p in rendered.placements:
        region = rendered.fleet.regions[p.plan.region]
        for role, pod in pods(p):
            names = [c["name"] for c in pod.get("initContainers", [])]
            if role == "worker" and region.model_store.cache.pvc is not None and "model-fetch" not in names:
                assert names == ["model-wait"]
            elif role == "worker" and region.model_store.cache.pvc is not None:
                pytest.fail(f"{p.plan.serving}: a worker fetches into the shared cache")


def test_every_serving_engine_listens_on_all_addresses(rendered: Rendering) -> None:
    for p in rendered.placements:
        flag = LISTEN_FLAG[p.launch.engine]
        for role, cmd in p.launch.roles.items():
            if not cmd.engine_args:
                continue  # a Ray worker runs no engine of its own
            argv = list(cmd.engine_args)
            assert flag in argv, (p.plan.serving, role)
            assert argv[argv.index(flag) + 1] == "0.0.0.0", (p.plan.serving, role)
            assert str(p.launch.port) == argv[argv.index("--port") + 1]


def test_every_engine_argv_passes_its_pinned_flag_schema(rendered: Rendering) -> None:
    for p in rendered.placements:
        schema = load_schema(p.launch.engine, p.launch.engine_version)
        for role, cmd in p.launch.roles.items():
            assert validate_args(schema, list(cmd.engine_args), role) == [], (p.plan.serving, role)


def test_args_in_the_pod_are_the_validated_args(rendered: Rendering) -> None:
    """What the container runs is exactly what was validated, including through the Ray shell."""
    for p in rendered.placements:
        for cmd in p.launch.roles.values():
            if cmd.command[:2] == ("/bin/sh", "-c"):
                [script] = cmd.args
                if not cmd.engine_args:
                    # A Ray worker waits for the head (bounded), then joins it.
                    assert script.startswith(
                        "i=0; until ray health-check --address=$(LWS_LEADER_ADDRESS):6379"
                    )
                    assert "exit 1" in script and script.endswith("--block --disable-usage-stats")
                    continue
                head, _, tail = script.partition(" && exec ")
                assert head.startswith("ray start --head")
                assert shlex.split(tail)[-len(cmd.engine_args) :] == list(cmd.engine_args)
            else:
                assert cmd.args == cmd.engine_args


def test_multi_node_is_a_leader_worker_set_that_restarts_as_a_group(rendered: Rendering) -> None:
    for p in rendered.placements:
        if not p.objects:  # a local region's placement
            continue
        [workload] = [o for o in p.objects if o["kind"] in ("Deployment", "LeaderWorkerSet")]
        if not p.plan.multi_node:
            assert workload["kind"] == "Deployment"
            continue
        assert (workload["apiVersion"], workload["kind"]) == (LWS_API, "LeaderWorkerSet")
        lwt = workload["spec"]["leaderWorkerTemplate"]
        assert lwt["restartPolicy"] == "RecreateGroupOnPodRestart"
        assert lwt["size"] == p.plan.nodes
        [svc] = [o for o in p.objects if o["kind"] == "Service"]
        assert svc["spec"]["selector"]["modelfleet.io/role"] == "leader"


def test_every_engine_pod_mounts_shared_memory(rendered: Rendering) -> None:
    for p in rendered.placements:
        for role, pod in pods(p):
            volumes = {v["name"]: v for v in pod["volumes"]}
            [shm] = [m for m in engine_container(pod)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory", (p.plan.pool, role)


def test_multi_node_roles(rendered: Rendering) -> None:
    for p in rendered.placements:
        expected = {"leader", "worker"} if p.plan.multi_node else {"single"}
        assert set(p.launch.roles) == expected
        if p.launch.launcher == "native" and p.launch.engine == "vllm":
            assert "--headless" not in p.launch.roles["leader"].engine_args
            assert "--headless" in p.launch.roles["worker"].engine_args


def _dump(r: Rendering) -> str:
    return json.dumps([obj for _, obj in r.objects()])


def test_demo_rendering_is_deterministic() -> None:
    assert _dump(build(STACKS, "demo")) == _dump(build(STACKS, "demo"))


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_case_rendering_is_deterministic(case_id: str) -> None:
    case = BY_ID[case_id]
    assert _dump(render_fleet(case.fleet())) == _dump(render_fleet(case.fleet()))


# ------------------------------------------------------------------- what the platform refuses


def render_error(hw: f.Hardware, **serving: Any) -> IssuesError:
    serving.setdefault("template", f.vllm_template(hw))
    fleet = f.on(hw, f.serving(pool=hw.pool_name, **serving))
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    return caught.value


@pytest.mark.parametrize("flag", ["--port", "--host", "--served-model-name", "--tensor-parallel-size"])
def test_extra_args_cannot_override_platform_owned_flags(flag: str) -> None:
    err = render_error(f.nvidia_h100_80g_x8, extra_args=[flag, "1"])
    [issue] = err.issues
    assert issue.path == "servings[chat].extra_args"
    assert issue.message == f"{flag} is set by the platform; use the serving's fields instead"


def test_sglang_alias_of_a_platform_flag_is_refused() -> None:
    """SGLang takes --tensor-parallel-size as well as --tp-size: the alias must not override the plan."""
    fleet = f.fleet(f.config(), f.serving(template="sglang", extra_args=["--tensor-parallel-size", "4"]))
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    [issue] = caught.value.issues
    assert issue.path == "servings[chat].extra_args"
    assert "--tensor-parallel-size is set by the platform" in issue.message


def test_extra_args_override_with_inline_value_is_refused_too() -> None:
    [issue] = render_error(f.nvidia_h100_80g_x8, extra_args=["--port=9000"]).issues
    assert issue.path == "servings[chat].extra_args"
    assert "--port is set by the platform" in issue.message


def test_template_args_cannot_override_platform_owned_flags() -> None:
    templates = [f.template(args=["--port", "9000"])]
    fleet = f.fleet(f.config(templates=templates), f.serving())
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    [issue] = caught.value.issues
    assert issue.path == "templates[vllm].args"


def test_extra_args_typo_is_refused_with_a_suggestion() -> None:
    [issue] = render_error(f.nvidia_h100_80g_x8, extra_args=["--enable-prefix-cachin"]).issues
    assert issue.path == "servings[chat].placements[0]"
    assert "did you mean --enable-prefix-caching?" in issue.message


def test_310p_serving_in_bfloat16_is_refused(ascend_310p_x4: f.Hardware) -> None:
    """The capability catalog refuses it at spec time, naming the field and what the family runs."""
    serving = f.serving(
        pool=ascend_310p_x4.pool_name,
        template="vllm-011",
        model="qwen3-8b",
        max_model_len=4096,
        dtype="bfloat16",
    )
    with pytest.raises(SpecError) as caught:
        f.on(ascend_310p_x4, serving)
    [issue] = caught.value.issues
    assert issue.path == "servings[chat].dtype"
    assert "computes in float16 only" in issue.message


def test_310p_serving_in_float16_is_accepted(ascend_310p_x4: f.Hardware) -> None:
    fleet = f.on(
        ascend_310p_x4,
        f.serving(pool=ascend_310p_x4.pool_name, template="vllm-011", model="qwen3-8b", dtype="float16"),
    )
    [p] = render_fleet(fleet).placements
    args = list(p.launch.roles["single"].engine_args)
    assert args.count("--dtype") == 1 and args[args.index("--dtype") + 1] == "float16"


def test_user_cannot_turn_off_a_vendor_forced_flag(biren_br166_x8: f.Hardware) -> None:
    [issue] = render_error(biren_br166_x8, model="qwen3-8b", extra_args=["--no-enforce-eager"]).issues
    assert issue.path == "servings[chat].extra_args"
    assert "conflicts with --enforce-eager" in issue.message


def test_hami_tp1_gets_no_all_reduce_quirk(nvidia_l20_x8_hami: f.Hardware) -> None:
    fleet = f.on(nvidia_l20_x8_hami, f.serving(pool=nvidia_l20_x8_hami.pool_name, model="qwen3-8b"))
    [p] = render_fleet(fleet).placements
    assert p.plan.tensor == 1
    assert "--disable-custom-all-reduce" not in p.launch.roles["single"].engine_args


@pytest.mark.parametrize("big_first", [True, False])
def test_an_object_over_the_api_servers_limit_is_refused_in_plan_order(big_first: bool) -> None:
    """A Deployment over etcd's 1.5 MiB is refused by name; with an engine-flag refusal of another
    serving, both are reported in the order the servings are planned (launches and objects are
    rendered in separate passes)."""
    big = f.serving("big", env={"CHAT_TEMPLATE": "x " * 900_000})
    typo = f.serving("typo", extra_args=["--enable-prefix-cachin"])
    fleet = f.fleet(f.config(), *((big, typo) if big_first else (typo, big)))
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    paths = [i.path for i in caught.value.issues]
    expected = ["servings[big]", "servings[typo].placements[0]"]
    assert paths == (expected if big_first else expected[::-1])
    [size] = [i for i in caught.value.issues if i.path == "servings[big]"]
    assert "its Deployment big-nvidia-h100-80g-x8 would be 1.7 MiB, over the 1.5 MiB" in size.message


def test_template_pinning_a_version_without_schema_is_refused() -> None:
    template = f.template(engine_version="0.99.0")
    template["images"]["nvidia"] = "docker.io/vllm/vllm-openai:v0.99.0"
    fleet = f.fleet(f.config(templates=[template]), f.serving())
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    [issue] = caught.value.issues
    assert issue.path == "templates[vllm].engine_version"
    assert "no flag schema for vllm 0.99.0" in issue.message


def test_vendor_without_default_image_needs_one_in_the_template(metax_c500_x8: f.Hardware) -> None:
    config = f.config(pools=[metax_c500_x8.pool()], templates=[f.template(images={})])
    fleet = f.fleet(config, f.serving(pool=metax_c500_x8.pool_name))
    with pytest.raises(RenderError) as caught:
        render_fleet(fleet)
    [issue] = caught.value.issues
    assert issue.path == "templates[vllm].images"
    assert "set images.metax" in issue.message
