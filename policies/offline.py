"""Run the policy pack without the Pulumi engine, over the resources the real program registers.

`components.offline.capture` runs the Pulumi program under mocks; `run_pack` then does what the
engine's analyzer does with a policy pack: each resource goes to every resource policy (props wrapped in
`unknown_checking_proxy`, the policy's config with its schema defaults), the whole graph goes to every
stack policy, and enforcement levels resolve the same way (the policy's section of the config, then
`all`, then the policy's own level). The policies are the objects `policies/__main__.py` registers, so
`python -m fleet check` and `pulumi preview --policy-pack policies` agree.

A stack's policy config lives next to its servings, `stacks/<stack>/policy.json`, in the format of
`pulumi preview --policy-pack-config`.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

from components.offline import CapturedResource, capture
from fleet.pipeline import build
from fleet.rules.base import section
from policies.validators import POLICIES

CONFIG_FILE = "policy.json"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")


@dataclass(frozen=True, slots=True)
class Violation:
    policy: str
    level: str  # 'mandatory' or 'advisory'
    urn: str  # '' when a stack policy blames the stack as a whole
    message: str

    @property
    def mandatory(self) -> bool:
        return self.level == "mandatory"

    def __str__(self) -> str:
        where = f" ({self.urn})" if self.urn else ""
        return f"[{self.level}] {self.policy}: {self.message}{where}"


def load_config(stacks_dir: Path, stack: str) -> dict[str, Any] | None:
    """`stacks/<stack>/policy.json`, if the stack has one."""
    path = stacks_dir / stack / CONFIG_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a policy-pack config is a JSON object keyed by policy name")
    return data


def enforcement(policy: Policy, config: Mapping[str, Any] | None) -> str:
    """The level the engine would use: config section, then `all`, then the policy, then advisory."""
    chosen = section(config, policy.name).get("enforcementLevel") or section(config, "all").get(
        "enforcementLevel"
    )
    if chosen is None:
        chosen = policy.enforcement_level.value if policy.enforcement_level is not None else "advisory"
    if chosen not in LEVELS:
        raise ValueError(f"policy config: {policy.name}: unknown enforcement level {chosen!r}")
    return "mandatory" if chosen == "remediate" else str(chosen)


def policy_config(policy: Policy, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy's config as its validators get it: schema defaults, then the config's values."""
    schema = policy.config_schema.properties if policy.config_schema is not None else {}
    out = {key: copy.deepcopy(prop["default"]) for key, prop in schema.items() if "default" in prop}
    out.update({k: v for k, v in section(config, policy.name).items() if k != "enforcementLevel"})
    return out


def _check_names(config: Mapping[str, Any] | None, policies: Sequence[Policy]) -> None:
    known = {p.name for p in policies} | {"all"}
    unknown = sorted(set(config or {}) - known)
    if unknown:
        raise ValueError(f"policy config names unknown policies {unknown}; known: {sorted(known - {'all'})}")


def resource_options(parent: str = "") -> PolicyResourceOptions:
    """Options as the engine passes them for a resource with no options set."""
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent or None,
    )


def _provider(r: CapturedResource, by_urn: Mapping[str, CapturedResource]) -> PolicyProviderResource | None:
    if not r.provider:
        return None
    urn = r.provider.rsplit("::", 1)[0]
    found = by_urn.get(urn)
    if found is None:
        return PolicyProviderResource(urn.split("::")[2], {}, urn, urn.split("::")[-1])
    props = unknown_checking_proxy(copy.deepcopy(found.props))
    return PolicyProviderResource(found.type, props, urn, found.name)


def _unknown(exc: UnknownValueError) -> str:
    return f"can't run policy during preview: {exc.message}"


def run_validation(result: Any) -> None:
    """Wait for a validator that is a coroutine (the SDK allows async validators)."""
    if inspect.isawaitable(result):
        asyncio.run(_await(result))


async def _await(result: Any) -> None:
    await result


def run_pack(
    resources: Sequence[CapturedResource],
    config: Mapping[str, Any] | None = None,
    policies: Sequence[Policy] = POLICIES,
) -> list[Violation]:
    """Every violation the pack reports for `resources`, mandatory first."""
    _check_names(config, policies)
    by_urn = {r.urn: r for r in resources}
    out: list[Violation] = []
    for policy in policies:
        level = enforcement(policy, config)
        if level == "disabled":
            continue
        cfg = policy_config(policy, config)
        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                out += _validate_resource(policy, level, cfg, r, by_urn)
        elif isinstance(policy, StackValidationPolicy):
            found: list[Violation] = []

            def report(message: str, urn: str | None = None) -> None:
                found.append(Violation(policy.name, level, urn or "", message))  # noqa: B023

            args = StackValidationArgs(_policy_resources(resources, by_urn), cfg)
            try:
                run_validation(policy.validate(args, report))
            except UnknownValueError as exc:
                found.append(Violation(policy.name, "advisory", "", _unknown(exc)))
            out += found
    return sorted(out, key=lambda v: (not v.mandatory, v.policy, v.urn, v.message))


def _validate_resource(
    policy: ResourceValidationPolicy,
    level: str,
    cfg: dict[str, Any],
    r: CapturedResource,
    by_urn: Mapping[str, CapturedResource],
) -> list[Violation]:
    found: list[Violation] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(Violation(policy.name, level, r.urn, message))  # the engine blames this resource

    props = unknown_checking_proxy(copy.deepcopy(r.props))
    args = ResourceValidationArgs(
        r.type, props, r.urn, r.name, resource_options(r.parent), _provider(r, by_urn), cfg
    )
    try:
        run_validation(policy.validate(args, report))
    except UnknownValueError as exc:
        found.append(Violation(policy.name, "advisory", r.urn, _unknown(exc)))
    return found


def _policy_resources(
    resources: Sequence[CapturedResource], by_urn: Mapping[str, CapturedResource]
) -> list[PolicyResource]:
    made = {
        r.urn: PolicyResource(
            r.type,
            unknown_checking_proxy(copy.deepcopy(r.props)),
            r.urn,
            r.name,
            resource_options(r.parent),
            _provider(r, by_urn),
            None,
            [],
            {},
        )
        for r in resources
    }
    for r in resources:
        made[r.urn].parent = made.get(r.parent)
        made[r.urn].dependencies = [made[d] for d in r.dependencies if d in made]
    return list(made.values())


def check_stack(stacks_dir: Path, stack: str, config: Mapping[str, Any] | None = None) -> list[Violation]:
    """Validate and render the stack (raising the core's `IssuesError` on a broken stack), run the
    Pulumi program under mocks, and run the pack over what it registered. Without `config`, the
    stack's `policy.json` (if any) is used."""
    build(stacks_dir, stack)  # spec, plan and flag errors first, with their YAML paths
    if config is None:
        config = load_config(stacks_dir, stack)
    return run_pack(capture(stacks_dir, stack), config)


def mandatory(violations: Sequence[Violation]) -> list[Violation]:
    return [v for v in violations if v.mandatory]
