"""`GET /api/regions`: the demo stack's regions and pools, with the planner's numbers."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from fleet.planner import plan_fleet
from portal.bootstrap import DEMO_STACKS
from portal.services import Services
from tests.portal.helpers import as_user, make_member


@pytest.fixture
def demo(services: Services) -> str:
    repo = services.repository
    shutil.copytree(DEMO_STACKS, repo.stacks_dir, dirs_exist_ok=True)
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "demo stack")
    return "demo"


def test_regions_and_pools_carry_the_planners_numbers(
    client: TestClient, services: Services, demo: str
) -> None:
    answer = client.get("/api/regions", params={"stack": demo})
    assert answer.status_code == 200, answer.text
    page = answer.json()
    names = [r["name"] for r in page["items"]]
    assert page["total"] == 4 and names == ["cn-east", "cn-south", "cn-north", "local"]
    east = page["items"][0]
    assert (
        east["display_name"] == "East China (Shanghai)" and east["gateway_domain"] == "east.llm.example.com"
    )
    assert east["controllers"] == {"leader_worker_set": True, "keda": True, "prometheus": True}
    plan = plan_fleet(services.repository.snapshot(demo).fleet)
    pools = {p["name"]: p for r in page["items"] for p in r["pools"]}
    assert set(pools) == set(plan.pools)
    for name, use in plan.pools.items():
        assert (pools[name]["capacity"], pools[name]["allocated"]) == (use.capacity, use.used), name
        assert pools[name]["free"] == use.capacity - use.used and pools[name]["peak"] == use.peak
    h100 = pools["east-h100"]
    assert h100["accelerator"] == "nvidia/h100-80g" and h100["vendor"] == "nvidia" and h100["family"]
    assert h100["devices_per_node"] == 8 and h100["nodes"] == 4 and h100["capacity"] == 32
    assert h100["memory_per_device_gib"] == 80 and h100["allocated"] > 0
    shared = pools["east-l20-shared"]
    assert shared["sharing"] == "hami" and (shared["nodes_min"], shared["nodes"]) == (1, 2)
    assert [p["name"] for p in page["items"][1]["pools"]] == ["south-910b", "south-a3"]


def test_any_signed_in_user_may_read_and_nobody_else(client: TestClient, demo: str) -> None:
    client.post("/api/workspaces", json={"slug": "team-a", "name": "A"})
    alice = make_member(client, "alice", "team-a", "member")
    with as_user(client, alice):
        assert client.get("/api/regions").json()["total"] == 4  # the only stack is the default
    assert client.get("/api/regions", headers={"Authorization": ""}).status_code == 401


def test_paging_and_an_unknown_stack(client: TestClient, demo: str) -> None:
    page = client.get("/api/regions", params={"page": 2, "page_size": 2}).json()
    assert [r["name"] for r in page["items"]] == ["cn-north", "local"] and page["total"] == 4
    unknown = client.get("/api/regions", params={"stack": "nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0]["field"] == "stack"
