"""`fleet.incremental`: checking one serving change costs that serving, and says what the full path says.

The property tests draw many variations of a serving (new or replacing one, sound or broken in every
way the checks know) and compare `check_change` with `fleet.rules.preflight`, finding for finding,
on the demo stack and on a synthetic one with tight policies.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.synthetic import synthetic_stack
from fleet.incremental import StackIndex, check_change, index_stack
from fleet.pipeline import Rendering, render_fleet
from fleet.rules import preflight
from fleet.rules.preflight import stack_data
from fleet.stack import Fleet, build_fleet
from policies.offline import load_config

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_POLICY: dict[str, Any] = {
    "workspace-devices": {"maxDevices": {"ws1": 8, "*": 24}},
    "public-model-replicas": "mandatory",
    "image-digest": "disabled",
    "workspace-regions": {"allowedRegions": {"ws2": ["r01"]}},
}


@pytest.fixture(scope="module")
def demo_config() -> dict[str, Any]:
    return load_config(ROOT / "stacks", "demo") or {}


@pytest.fixture(scope="module")
def demo_index(demo: Rendering) -> StackIndex:
    return index_stack(demo.fleet, demo)


@pytest.fixture(scope="module")
def synthetic_index() -> StackIndex:
    config, servings = synthetic_stack(60, regions=4)
    return index_stack(build_fleet("synthetic", config, servings))


def _raw(fleet: Fleet, name: str) -> dict[str, Any]:
    serving = next(s for s in fleet.servings if s.name == name)
    return serving.model_dump(mode="json", exclude_none=True)


def variation(draw: st.DrawFn, fleet: Fleet) -> dict[str, Any]:
    """A serving request: an existing serving or a new one with a few fields changed, and now and
    then one thing broken (unknown names, a bad flag, a field out of range). Choices come from a
    Random seeded by hypothesis, so their odds are the ones written here (hypothesis' own draws
    favour edge values, which would make nearly every request broken)."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    names = [s.name for s in fleet.servings]
    raw = _raw(fleet, rnd.choice(names))
    if rnd.random() < 0.4:
        raw["name"] = rnd.choice(["brand-new", "x9", "a-new-serving"])
    sound: dict[str, list[Any]] = {
        "model": ["qwen3-8b", "qwen2.5-7b-instruct", "qwen3-32b", "llama-3.1-70b-instruct", "deepseek-r1"],
        "template": list(fleet.templates),
        "max_model_len": [4096, 8192, 32768, 1_000_000],
        "parallelism": ["auto", {"tensor": 1}, {"tensor": 2}, {"tensor": 3}, {"tensor": 8, "pipeline": 2}],
        "extra_args": [[], ["--max-num-seqs", "32"], ["--tensor-parallel-size", "2"]],
        "env": [{}, {"FOO": "bar"}, {"OPENAI_API_KEY": "sk-live"}],
        "public_model_name": [None, "qwen3-32b", "shared", *names[:3]],
        "workspace": ["demo", "team-x", "ws1", "ws2", "ws3"],
        "autoscaling": [None, None, None, {"min_replicas": 0, "max_replicas": 40}],
        "quantization": [None, "fp8", "awq"],
        "gpu_memory_utilization": [None, 0.5, 0.95],
    }
    broken: dict[str, Any] = {
        "model": "no-such-model",
        "template": "no-template",
        "max_model_len": 50,
        "extra_args": ["--no-such-flag"],
        "env": {"1BAD": "x"},
        "workspace": "Bad_Name",
    }
    for key in rnd.sample(sorted(sound), rnd.randint(0, 4)):
        value = rnd.choice(sound[key])
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = copy.deepcopy(value)
    if rnd.random() < 0.12:
        key = rnd.choice(sorted(broken))
        raw[key] = copy.deepcopy(broken[key])
    pools = rnd.sample(list(fleet.pools), rnd.randint(1, 2))
    if rnd.random() < 0.05:
        pools.append(rnd.choice([pools[0], "no-such-pool"]))
    placements = []
    for pool in pools:
        region = fleet.pools[pool].spec.region if pool in fleet.pools else "cn-east"
        if rnd.random() < 0.04:
            region = rnd.choice([*fleet.regions, "no-region"])
        placement: dict[str, Any] = {"region": region, "pool": pool, "replicas": rnd.randint(0, 12)}
        if rnd.random() < 0.2:
            placement["parallelism"] = copy.deepcopy(rnd.choice(sound["parallelism"]))
        placements.append(placement)
    raw["placements"] = placements
    return raw


def assert_same(index: StackIndex, raw: dict[str, Any], config: dict[str, Any] | None) -> None:
    full = preflight(index.fleet, raw, config)
    change = check_change(index, raw, config)
    assert list(change.findings) == full
    if change.rendered is not None and not any(f.rule in ("spec", "plan", "render") for f in full):
        # What preview shows is what a full rebuild renders for the serving.
        others = [
            (f"servings[{s.name}]", s.model_dump(mode="json", exclude_none=True))
            for s in index.fleet.servings
        ]
        others = [(p, r) for p, r in others if r["name"] != raw["name"]]
        rebuilt = render_fleet(build_fleet("x", stack_data(index.fleet), [*others, ("candidate", raw)]))
        expected = [p.objects for p in rebuilt.placements if p.plan.serving == raw["name"]]
        assert [p.objects for p in change.rendered] == expected


EXAMPLES = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


@EXAMPLES
@given(data=st.data())
def test_the_fast_path_says_what_the_full_path_says_on_the_demo_stack(
    data: st.DataObject, demo_index: StackIndex, demo_config: dict[str, Any]
) -> None:
    raw = data.draw(st.composite(variation)(demo_index.fleet))
    assert_same(demo_index, raw, demo_config)


@EXAMPLES
@given(data=st.data())
def test_the_fast_path_says_what_the_full_path_says_on_a_synthetic_stack(
    data: st.DataObject, synthetic_index: StackIndex
) -> None:
    raw = data.draw(st.composite(variation)(synthetic_index.fleet))
    assert_same(synthetic_index, raw, SYNTHETIC_POLICY)


def request(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "my-chat",
        "workspace": "demo",
        "model": "qwen3-8b",
        "template": "vllm-latest",
        "max_model_len": 8192,
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 1}],
    }
    raw.update(changes)
    return raw


FAILURES = {
    "unknown pool": request(placements=[{"region": "cn-east", "pool": "sh-h200"}]),
    "pool in another region": request(placements=[{"region": "cn-east", "pool": "south-910b"}]),
    "over capacity": request(placements=[{"region": "cn-east", "pool": "east-h100", "replicas": 20}]),
    "memory does not fit": request(
        model="deepseek-r1", placements=[{"region": "cn-north", "pool": "north-br166"}]
    ),
    "bad flag": request(extra_args=["--enable-prefix-cahing"]),
    "platform flag": request(extra_args=["--port", "9000"]),
    "plain secret": request(env={"OPENAI_API_KEY": "sk-live"}),
    "public name clash": request(public_model_name="qwen3-32b"),
    "region not allowed": request(
        workspace="team-x", placements=[{"region": "cn-north", "pool": "north-c500"}]
    ),
    "scale an existing serving past its pool": {
        "name": "qwen25-7b",
        "workspace": "demo",
        "model": "qwen2.5-7b-instruct",
        "template": "vllm-latest",
        "placements": [{"region": "cn-east", "pool": "east-h100", "replicas": 40}],
    },
}


@pytest.mark.parametrize("raw", list(FAILURES.values()), ids=list(FAILURES))
def test_each_kind_of_refusal_is_the_same_and_blocks(
    raw: dict[str, Any], demo_index: StackIndex, demo_config: dict[str, Any]
) -> None:
    change = check_change(demo_index, raw, demo_config)
    assert list(change.findings) == preflight(demo_index.fleet, raw, demo_config)
    assert change.blocking


def test_capacity_counts_the_replaced_serving_once_and_names_the_shortfall(
    demo_index: StackIndex, demo_config: dict[str, Any]
) -> None:
    raw = _raw(demo_index.fleet, "qwen25-7b")
    raw["placements"][0]["replicas"] = 40
    [finding] = check_change(demo_index, raw).findings
    assert finding.rule == "plan" and finding.subject == "pools[east-h100]"
    assert finding.message.startswith("pools[east-h100]: 32 devices but servings ask for")
    assert "qwen25-7b 40x1): over by" in finding.message  # the candidate last, as a rebuild lists it
    assert finding.message.count("qwen25-7b ") == 1  # ... and its committed self not at all
    raw["placements"][0]["replicas"] = 3
    change = check_change(demo_index, raw, demo_config)
    assert not change.blocking
    before = demo_index.rendering.plan.pools["east-h100"].used if demo_index.rendering else 0
    assert change.pools["east-h100"].used == before + 1  # 2 -> 3 replicas of one device


def test_a_change_renders_what_a_rebuild_renders(demo_index: StackIndex) -> None:
    change = check_change(demo_index, request())
    assert change.rendered is not None
    [placement] = change.rendered
    assert placement.objects[0]["metadata"]["name"] == "my-chat-east-h100"


def test_a_committed_stack_that_does_not_plan_falls_back_to_the_full_path(demo: Rendering) -> None:
    data = stack_data(demo.fleet)
    servings = [
        (f"servings[{s.name}]", s.model_dump(mode="json", exclude_none=True)) for s in demo.fleet.servings
    ]
    servings[0][1]["placements"][0]["replicas"] = 50  # over capacity, committed anyway
    broken = build_fleet("demo", data, servings)
    index = index_stack(broken)
    assert index.rendering is None and index.error is not None
    raw = request()
    assert list(check_change(index, raw).findings) == preflight(broken, raw)
