"""The pack's policies: one `ResourceValidationPolicy` or `StackValidationPolicy` per rule of
`fleet.rules`, each a thin adapter (config in, messages out) around the rule's plain function.

Importable without side effects (tests and `policies/offline.py` use these very objects); only
`__main__.py` builds the `PolicyPack`, which starts a server. Every policy defined here is listed in
`POLICIES`, and `__main__.py` registers `POLICIES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from fleet import rules
from fleet.rules import RESOURCE_CHECKS, RULES, STACK_CHECKS, StackResource

PACK_NAME = "modelfleet-guardrails"
PROVIDER_TYPE = "pulumi:providers:"


def _level(name: str) -> EnforcementLevel:
    return EnforcementLevel(RULES[name].level)


def _schema(name: str) -> PolicyConfigSchema | None:
    properties = RULES[name].settings
    return PolicyConfigSchema(properties={k: dict(v) for k, v in properties.items()}) if properties else None


def _settings(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    return rules.settings(name, config)


def _is_manifest(resource_type: str, props: Mapping[str, Any]) -> bool:
    return resource_type.startswith("kubernetes:") and isinstance(props.get("kind"), str)


def resource_policy(name: str) -> ResourceValidationPolicy:
    """The resource policy for `fleet.rules` rule `name`: every Kubernetes object goes through it."""
    check = RESOURCE_CHECKS[name]

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if not _is_manifest(args.resource_type, args.props):
            return
        for message in check(args.props, _settings(name, args.get_config())):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=RULES[name].description,
        validate=validate,
        enforcement_level=_level(name),
        config_schema=_schema(name),
    )


def stack_resources(args: StackValidationArgs) -> list[StackResource]:
    """The stack's resources as the rules see them (providers themselves left out)."""
    return [
        StackResource(r.urn, r.resource_type, r.props, r.provider.urn if r.provider is not None else None)
        for r in args.resources
        if not r.resource_type.startswith(PROVIDER_TYPE)
    ]


def stack_policy(name: str) -> StackValidationPolicy:
    """The stack policy for `fleet.rules` rule `name`: it sees the whole resource graph."""
    check = STACK_CHECKS[name]

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for found in check(stack_resources(args), _settings(name, args.get_config())):
            report_violation(found.message, found.urn)

    return StackValidationPolicy(
        name=name,
        description=RULES[name].description,
        validate=validate,
        enforcement_level=_level(name),
        config_schema=_schema(name),
    )


# ------------------------------------------------------------------------------ resource policies
accelerator_resource = resource_policy("accelerator-resource")
parallelism_layout = resource_policy("parallelism-layout")
multi_node_group = resource_policy("multi-node-group")
shared_memory = resource_policy("shared-memory")
image_registry = resource_policy("image-registry")
image_pinned = resource_policy("image-pinned")
image_digest = resource_policy("image-digest")
no_plain_secrets = resource_policy("no-plain-secrets")
probes = resource_policy("probes")
startup_budget = resource_policy("startup-budget")
workspace_regions = resource_policy("workspace-regions")
ownership_labels = resource_policy("ownership-labels")
ascend_a3_even_devices = resource_policy("ascend-a3-even-devices")
hami_custom_all_reduce = resource_policy("hami-custom-all-reduce")

# --------------------------------------------------------------------------------- stack policies
explicit_provider = stack_policy("explicit-provider")
public_model_name = stack_policy("public-model-name")
workspace_devices = stack_policy("workspace-devices")
public_model_replicas = stack_policy("public-model-replicas")

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    accelerator_resource,
    parallelism_layout,
    multi_node_group,
    shared_memory,
    image_registry,
    image_pinned,
    image_digest,
    no_plain_secrets,
    probes,
    startup_budget,
    workspace_regions,
    ownership_labels,
    ascend_a3_even_devices,
    hami_custom_all_reduce,
    explicit_provider,
    public_model_name,
    workspace_devices,
    public_model_replicas,
]
