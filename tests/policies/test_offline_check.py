"""The offline check end to end: the real Pulumi program under mocks, the captured resources through the
pack (the same policy objects `__main__.py` registers).

`fixtures/stacks/Pulumi.broken.yaml` holds one deliberate mistake per mandatory policy. Six come
from stack fields that reach the manifests (a template image from an unlisted registry, a `:latest`
image, a 60 s startup budget, a workspace outside its regions, a workspace over its device limit, one
public model name on two engines). The other eight cannot come out of our renderer (the spec refuses a
plain secret before anything renders), so `broken_resources` makes them on the captured resources:
another vendor's GPU resource, extra parallelism flags, a LeaderWorkerSet without its group restart
policy, no /dev/shm, a missing probe, a missing ownership label, a default provider, a plain HF_TOKEN.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.offline import CapturedResource, capture
from fleet.rules import RULES
from policies.offline import Violation, check_stack, load_config, mandatory, run_pack

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stacks"

FROM_STACK_FIELDS = {
    ("image-registry", "untrusted-chat-east-h100-deployment"),
    ("image-pinned", "floating-chat-east-h100-deployment"),
    ("startup-budget", "hasty-chat-east-h100-deployment"),
    ("workspace-regions", "team-a-chat-west-l40s-deployment"),
    ("workspace-devices", ""),  # a stack-level violation: the workspace, not one resource
    ("public-model-name", "shared-vllm-east-h100-deployment"),
}
FROM_CAPTURE_EDITS = {
    ("accelerator-resource", "clean-chat-east-h100-deployment"),
    ("parallelism-layout", "layout-chat-east-h100-deployment"),
    ("probes", "layout-chat-east-h100-deployment"),
    ("multi-node-group", "big-chat-east-h100-leaderworkerset"),
    ("shared-memory", "big-chat-east-h100-leaderworkerset"),
    ("ownership-labels", "clean-chat-east-h100-service"),
    ("explicit-provider", "clean-chat-east-h100-poddisruptionbudget"),
    ("no-plain-secrets", "token-chat-east-h100-deployment"),
}


def _pairs(violations: list[Violation]) -> list[tuple[str, str]]:
    return sorted((v.policy, v.urn.split("::")[-1] if v.urn else "") for v in violations)


def _container(props: dict[str, Any], template: str = "") -> dict[str, Any]:
    if props["kind"] == "LeaderWorkerSet":
        spec = props["spec"]["leaderWorkerTemplate"][template or "leaderTemplate"]["spec"]
    else:
        spec = props["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def _wrong_vendor(props: dict[str, Any]) -> None:
    _container(props)["resources"] = {"requests": {"amd.com/gpu": "1"}, "limits": {"amd.com/gpu": "1"}}


def _layout_and_probe(props: dict[str, Any]) -> None:
    _container(props)["args"] += ["--data-parallel-size", "2"]
    del _container(props)["livenessProbe"]


def _group(props: dict[str, Any]) -> None:
    props["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "None"
    worker = _container(props, "workerTemplate")
    worker["volumeMounts"] = [m for m in worker["volumeMounts"] if m["mountPath"] != "/dev/shm"]


def _label(props: dict[str, Any]) -> None:
    del props["metadata"]["labels"]["modelfleet.io/workspace"]


def _plain_token(props: dict[str, Any]) -> None:
    _container(props)["env"].append({"name": "HF_TOKEN", "value": "hf_plaintext_do_not_do_this"})


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "token-chat-east-h100-deployment": _plain_token,
    "clean-chat-east-h100-deployment": _wrong_vendor,
    "layout-chat-east-h100-deployment": _layout_and_probe,
    "big-chat-east-h100-leaderworkerset": _group,
    "clean-chat-east-h100-service": _label,
}


def broken_resources() -> list[CapturedResource]:
    out: list[CapturedResource] = []
    for r in capture(FIXTURES, "broken"):
        props = copy.deepcopy(r.props)
        if r.name in EDITS:
            EDITS[r.name](props)
        provider = "" if r.name == "clean-chat-east-h100-poddisruptionbudget" else r.provider
        out.append(dataclasses.replace(r, props=props, provider=provider))
    return out


@pytest.fixture(scope="module")
def broken() -> list[CapturedResource]:
    return broken_resources()


def test_the_fixture_has_one_mistake_per_mandatory_policy() -> None:
    expected = FROM_STACK_FIELDS | FROM_CAPTURE_EDITS
    assert sorted(policy for policy, _ in expected) == sorted(
        name for name, rule in RULES.items() if rule.level == "mandatory"
    )


def test_check_stack_fails_the_broken_stack_with_exactly_its_stack_field_mistakes() -> None:
    violations = check_stack(FIXTURES, "broken")  # reads broken/policy.json
    assert _pairs(mandatory(violations)) == sorted(FROM_STACK_FIELDS)


def test_run_pack_reports_exactly_one_violation_per_mistake(broken: list[CapturedResource]) -> None:
    violations = run_pack(broken, load_config(FIXTURES, "broken"))
    assert _pairs(mandatory(violations)) == sorted(FROM_STACK_FIELDS | FROM_CAPTURE_EDITS)
    assert all(v.message for v in violations)


def test_messages_name_the_resource_and_the_fix(broken: list[CapturedResource]) -> None:
    by_policy = {v.policy: v for v in mandatory(run_pack(broken, load_config(FIXTURES, "broken")))}
    assert by_policy["accelerator-resource"].message == (
        "Deployment modelfleet/clean-chat-east-h100: container engine requests amd.com/gpu (AMD) but runs "
        "on a NVIDIA pool: pods would never schedule; request nvidia.com/gpu instead"
    )
    assert by_policy["no-plain-secrets"].message.startswith(
        "Deployment modelfleet/token-chat-east-h100: container engine env HF_TOKEN holds a plain value; "
        "store it in a Secret and use valueFrom.secretKeyRef"
    )
    assert "workspace team-b would hold 2 accelerator devices" in by_policy["workspace-devices"].message
    assert by_policy["explicit-provider"].urn.endswith("::clean-chat-east-h100-poddisruptionbudget")


def test_the_demo_stack_passes() -> None:
    violations = check_stack(ROOT / "stacks", "demo")  # with stacks/demo/policy.json
    assert mandatory(violations) == []
    assert {v.policy for v in violations} == {"image-digest", "public-model-replicas"}
    assert all(v.level == "advisory" for v in violations)


def test_the_demo_without_its_policy_config_trips_the_default_registries() -> None:
    violations = run_pack(capture(ROOT / "stacks", "demo"))
    assert _pairs(mandatory(violations)) == [
        ("image-registry", "qwen25-7b-north-c500-deployment"),  # cr.metax-tech.com
        ("image-registry", "qwen3-8b-biren-north-br166-deployment"),  # registry.example.com
    ]


def test_enforcement_levels_resolve_like_the_engine(broken: list[CapturedResource]) -> None:
    config = load_config(FIXTURES, "broken") or {}
    everything_advisory = run_pack(broken, {**config, "all": "advisory"})
    assert mandatory(everything_advisory) == []
    one_mandatory = run_pack(
        broken, {**config, "all": "advisory", "probes": {"enforcementLevel": "mandatory"}}
    )
    assert _pairs(mandatory(one_mandatory)) == [("probes", "layout-chat-east-h100-deployment")]
    disabled = run_pack(broken, {**config, "image-digest": "disabled", "probes": "disabled"})
    assert not {"image-digest", "probes"} & {v.policy for v in disabled}


def test_unknown_policy_names_in_the_config_are_refused(broken: list[CapturedResource]) -> None:
    with pytest.raises(ValueError, match=r"unknown policies \['image-registy'\]"):
        run_pack(broken, {"image-registy": {"allowedRegistries": []}})


def test_unknown_values_are_advisory_like_in_a_preview(broken: list[CapturedResource]) -> None:
    from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

    resources = [
        dataclasses.replace(r, props={**r.props, "kind": UNKNOWN_STRING_VALUE})
        if r.name == "clean-chat-east-h100-service"
        else r
        for r in broken
    ]
    found = [v for v in run_pack(resources) if v.urn.endswith("::clean-chat-east-h100-service")]
    assert found and all(
        v.level == "advisory" and "can't run policy during preview" in v.message for v in found
    )
