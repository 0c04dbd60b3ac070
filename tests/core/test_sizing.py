"""Pod sizing (fleet.sizing) and what reaches the pod from a pool: its share of the node, HAMi shares,
the multi-node network; and the loader's handling of serving files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.errors import PlanError, SpecError
from fleet.loader import read_servings
from fleet.planner import plan_fleet
from fleet.sizing import DEFAULT_CPU_PER_DEVICE, DEFAULT_MEMORY_GIB_PER_DEVICE
from tests.fixtures import factories as f


def _plan(**pool: object) -> object:
    hw = f.nvidia_h100_80g_x8
    fleet = f.fleet(f.config(pools=[hw.pool(**pool)]), f.serving(model="qwen3-8b", parallelism={"tensor": 2}))
    [p] = plan_fleet(fleet).placements
    return p.size


def test_a_pod_gets_its_devices_share_of_the_node() -> None:
    size = _plan(cpu_per_node=190, memory_per_node_gib=1500)
    assert (size.cpu, size.memory_gib, size.assumed) == (47, 375, False)  # 2 of 8 devices, rounded down
    assert size.engine == {
        "requests": {"cpu": "47", "memory": "375Gi"},
        "limits": {"cpu": "47", "memory": "375Gi"},
    }


def test_an_unstated_node_shape_uses_the_per_device_defaults() -> None:
    size = _plan()
    assert (size.cpu, size.memory_gib) == (2 * DEFAULT_CPU_PER_DEVICE, 2 * DEFAULT_MEMORY_GIB_PER_DEVICE)
    assert size.assumed


def test_a_node_too_small_for_shared_memory_is_refused_at_the_pool() -> None:
    hw = f.nvidia_h100_80g_x8
    fleet = f.fleet(f.config(pools=[hw.pool(memory_per_node_gib=64)]), f.serving(model="qwen3-8b"))
    with pytest.raises(PlanError) as caught:
        plan_fleet(fleet)
    [issue] = caught.value.issues
    assert issue.path == f"pools[{hw.pool_name}].memory_per_node_gib"
    assert "gets 8 GiB of the node's 64 GiB but needs 24" in issue.message


def test_hami_cores_need_a_hami_pool() -> None:
    with pytest.raises(SpecError) as caught:
        f.fleet(f.config(pools=[f.nvidia_h100_80g_x8.pool(hami_cores_percent=50)]))
    assert "hami_cores_percent is for pools with sharing: hami" in str(caught.value)


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_serving_files_of_either_suffix_are_read(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / "s" / "servings"
    folder.mkdir(parents=True)
    (folder / f"chat{suffix}").write_text("name: chat\n")
    (folder / "NOTES.md").write_text("notes are not servings\n")
    assert read_servings(tmp_path, "s") == [("servings[chat]", {"name": "chat"})]


def test_the_same_serving_in_yaml_and_yml_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "s" / "servings"
    folder.mkdir(parents=True)
    (folder / "chat.yaml").write_text("name: chat\n")
    (folder / "chat.yml").write_text("name: chat\n")
    with pytest.raises(SpecError) as caught:
        read_servings(tmp_path, "s")
    [issue] = caught.value.issues
    assert issue.message == "both chat.yaml and chat.yml define it; keep one"


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm openai:1",
        "docker.io/VLLM/vllm:1",
        "docker.io/vllm/vllm:",
        "reg.io//x:1",
        "x:1@sha256:abc",
    ],
)
def test_images_are_checked_wherever_they_are_written(image: str) -> None:
    config = f.config(templates=[f.template(images={"nvidia": image})])
    config["platform"] = {"gateway": {"image": image}}
    with pytest.raises(SpecError) as caught:
        f.fleet(config)
    paths = {i.path for i in caught.value.issues}
    assert paths == {"templates[vllm].images.nvidia", "platform.gateway.image"}
