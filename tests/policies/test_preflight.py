"""`fleet.rules.preflight`: what the portal calls on a deploy request before writing anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.pipeline import Rendering
from fleet.rules import Finding, check_rendering, preflight
from fleet.spec import ModelServing
from policies.offline import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_config(ROOT / "stacks", "demo") or {}


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


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.blocking]


def test_a_sound_request_goes_through_with_advice_only(demo: Rendering, config: dict[str, Any]) -> None:
    findings = preflight(demo.fleet, request(), config)
    assert blocking(findings) == []
    assert {f.rule for f in findings} == {"image-digest"}
    assert all("my-chat" in f.message for f in findings)  # nothing about the other servings


def test_a_validated_serving_is_accepted_too(demo: Rendering, config: dict[str, Any]) -> None:
    serving = ModelServing.model_validate(request())
    assert blocking(preflight(demo.fleet, serving, config)) == []


def test_spec_errors_come_with_their_yaml_path(demo: Rendering) -> None:
    placements = [{"region": "cn-east", "pool": "sh-h200"}]
    [finding] = preflight(demo.fleet, request(placements=placements, max_model_len=12))
    assert finding.rule == "spec" and finding.blocking
    assert str(finding).endswith(
        "servings[my-chat].max_model_len: Input should be greater than or equal to 128"
    )
    [finding] = preflight(demo.fleet, request(placements=placements))
    assert finding.message == "servings[my-chat].placements[0].pool: unknown pool 'sh-h200'"


def test_the_planner_refuses_what_does_not_fit(demo: Rendering) -> None:
    placements = [{"region": "cn-north", "pool": "north-br166"}]
    big = {"uri": "s3://models/big-400b", "params_b": 400, "dtype": "bfloat16"}
    [finding] = preflight(demo.fleet, request(model=big, placements=placements))
    assert finding.rule == "plan"
    assert "does not fit even on all 1 nodes of pool 'north-br166'" in finding.message


def test_the_planner_refuses_a_full_pool(demo: Rendering) -> None:
    placements = [{"region": "cn-east", "pool": "east-h100", "replicas": 20}]
    [finding] = preflight(demo.fleet, request(placements=placements))
    assert finding.rule == "plan" and finding.subject == "pools[east-h100]"
    assert "32 devices but servings ask for" in finding.message


def test_engine_flags_are_checked(demo: Rendering) -> None:
    findings = preflight(demo.fleet, request(extra_args=["--enable-prefix-cahing"]))
    [finding] = findings
    assert finding.blocking and finding.subject.startswith("servings[my-chat]")
    assert "--enable-prefix-cahing" in finding.message


def test_plain_secrets_are_refused(demo: Rendering, config: dict[str, Any]) -> None:
    """By the spec, before anything renders: a plain secret never reaches a manifest."""
    [finding] = blocking(preflight(demo.fleet, request(env={"OPENAI_API_KEY": "sk-live"}), config))
    assert finding.rule == "spec" and finding.subject == "servings[my-chat].env.OPENAI_API_KEY"
    assert "holds a plain value; keep it in a Kubernetes Secret and use secret_env" in finding.message


def test_a_public_name_taken_by_another_engine_is_refused(demo: Rendering, config: dict[str, Any]) -> None:
    [finding] = blocking(preflight(demo.fleet, request(public_model_name="qwen3-32b"), config))
    assert finding.rule == "public-model-name"
    assert "my-chat (vllm 0.33.0 on nvidia/h100-80g) and qwen3-32b-sglang (sglang 0.5.23" in finding.message


def test_workspace_limits(demo: Rendering, config: dict[str, Any]) -> None:
    tight = {**config, "workspace-devices": {"maxDevices": {"demo": 36}}}
    [finding] = blocking(preflight(demo.fleet, request(), tight))
    assert finding.rule == "workspace-devices"
    assert "workspace demo would hold 37 accelerator devices" in finding.message
    placements = [{"region": "cn-north", "pool": "north-c500"}]
    [finding] = blocking(preflight(demo.fleet, request(workspace="team-x", placements=placements), config))
    assert finding.rule == "workspace-regions"
    assert "workspace team-x may not deploy to region cn-north (allowed: cn-east)" in finding.message


def test_replacing_a_serving_does_not_count_it_twice(demo: Rendering, config: dict[str, Any]) -> None:
    current = next(s for s in demo.fleet.servings if s.name == "qwen25-7b")
    raw = current.model_dump(mode="json", exclude_defaults=True)
    raw["placements"][0]["replicas"] = 3
    findings = preflight(demo.fleet, raw, {**config, "workspace-devices": {"maxDevices": {"demo": 37}}})
    assert blocking(findings) == []


def test_advisories_can_be_made_blocking(demo: Rendering, config: dict[str, Any]) -> None:
    strict = {**config, "public-model-replicas": {"enforcementLevel": "mandatory"}}
    [finding] = blocking(preflight(demo.fleet, request(public_model_name="my-chat"), strict))
    assert finding.rule == "public-model-replicas"
    assert "public model 'my-chat' runs 1 replica(s) in total" in finding.message


def test_check_rendering_runs_every_offline_rule_over_the_demo(
    demo: Rendering, config: dict[str, Any]
) -> None:
    findings = check_rendering(demo, config)
    assert blocking(findings) == []
    assert {f.rule for f in findings} == {"image-digest", "public-model-replicas"}
