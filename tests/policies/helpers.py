"""Calling policies the way the engine does, without the engine: props wrapped in
`unknown_checking_proxy`, violations collected by a reporter (pulumi_patterns.md §3.2)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyProviderResource,
    PolicyResource,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from components.offline import CapturedResource
from fleet.pipeline import Rendering
from policies.offline import policy_config, resource_options, run_validation

PROVIDER_URN = "urn:pulumi:test::modelfleet::modelfleet:index:Region$pulumi:providers:kubernetes::cn-east"


def type_of(props: Mapping[str, Any]) -> str:
    return f"kubernetes:{props.get('apiVersion')}:{props.get('kind')}"


def urn_of(props: Mapping[str, Any]) -> str:
    name = props.get("metadata", {}).get("name", "r")
    return f"urn:pulumi:test::modelfleet::{type_of(props)}::{name}"


def run_resource_policy(
    policy: ResourceValidationPolicy,
    props: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    type_: str | None = None,
) -> list[str]:
    """Messages `policy` reports for one resource; `config` is the policy's section."""
    found: list[str] = []
    type_ = type_ or type_of(props)
    args = ResourceValidationArgs(
        type_,
        unknown_checking_proxy(copy.deepcopy(dict(props))),
        urn_of(props),
        "r",
        resource_options(),
        None,
        policy_config(policy, {policy.name: dict(config or {})}),
    )
    run_validation(policy.validate(args, lambda message, urn=None: found.append(message)))
    return found


def policy_resource(props: Mapping[str, Any], provider: str | None = PROVIDER_URN) -> PolicyResource:
    prov = (
        PolicyProviderResource("pulumi:providers:kubernetes", {}, provider, "cn-east") if provider else None
    )
    return PolicyResource(
        type_of(props),
        unknown_checking_proxy(copy.deepcopy(dict(props))),
        urn_of(props),
        "r",
        resource_options(),
        prov,
        None,
        [],
        {},
    )


def run_stack_policy(
    policy: StackValidationPolicy,
    resources: Sequence[PolicyResource],
    config: Mapping[str, Any] | None = None,
) -> list[tuple[str | None, str]]:
    found: list[tuple[str | None, str]] = []
    args = StackValidationArgs(list(resources), policy_config(policy, {policy.name: dict(config or {})}))
    run_validation(policy.validate(args, lambda message, urn=None: found.append((urn, message))))
    return found


def workload(rendering: Rendering, serving: str, pool: str) -> dict[str, Any]:
    """A deep copy of the rendered Deployment/LeaderWorkerSet of one placement (tests edit it)."""
    for p in rendering.placements:
        if p.plan.serving == serving and p.plan.pool == pool:
            return copy.deepcopy(next(o for o in p.objects if o["kind"] in ("Deployment", "LeaderWorkerSet")))
    raise KeyError(f"{serving} on {pool}")


def objects(rendering: Rendering) -> list[dict[str, Any]]:
    return [copy.deepcopy(obj) for _, obj in rendering.objects()]


def by_name(resources: Sequence[CapturedResource], name: str) -> CapturedResource:
    return next(r for r in resources if r.name == name)
