"""The rule table: every guardrail's name, default enforcement, scope and tunable settings.

The Pulumi policy pack (`policies/validators.py`), the offline runner and the portal's preflight read
this one table, so a rule has the same name, level and defaults everywhere. Settings are JSON schema
properties with a `default`; ops override them per stack in a policy-pack config file shaped like
Pulumi's `--policy-pack-config` (`{"all": "mandatory", "image-registry": {"allowedRegistries": [...]}}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.manifests import LOAD_SECONDS_PER_GIB, MIN_STARTUP_SECONDS

Level = Literal["mandatory", "advisory"]
Scope = Literal["resource", "stack"]
LEVELS: tuple[str, ...] = ("advisory", "mandatory", "remediate", "disabled")

DEFAULT_REGISTRIES = (
    "docker.io",
    "quay.io",
    "ghcr.io",
    "nvcr.io",
    "registry.k8s.io",
    "swr.*.myhuaweicloud.com",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One broken guardrail: which rule, how bad, on what, and the message (naming both the
    resource and the fix)."""

    rule: str
    level: Level
    subject: str
    message: str

    def __str__(self) -> str:
        return f"[{self.level}] {self.rule}: {self.message}"

    @property
    def blocking(self) -> bool:
        return self.level == "mandatory"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    level: Level
    scope: Scope
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # JSON schema per key


def _rule(
    name: str,
    level: Level,
    scope: Scope,
    description: str,
    **settings: Mapping[str, Any],
) -> Rule:
    return Rule(name, description, level, scope, settings)


_WORKSPACE_MAP = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        _rule(
            "accelerator-resource",
            "mandatory",
            "resource",
            "Accelerator containers request the pool vendor's resource name, with requests equal to "
            "limits, and never another vendor's resource.",
        ),
        _rule(
            "parallelism-layout",
            "mandatory",
            "resource",
            "Tensor x pipeline x data parallel equals the devices of a replica, and tensor parallel "
            "divides the devices of each node (pod).",
        ),
        _rule(
            "multi-node-group",
            "mandatory",
            "resource",
            "A replica spanning several nodes is a LeaderWorkerSet that recreates the whole group when "
            "one pod restarts (RecreateGroupOnPodRestart).",
        ),
        _rule(
            "shared-memory",
            "mandatory",
            "resource",
            "Accelerator containers mount a memory-backed emptyDir at /dev/shm (NCCL/HCCL and the "
            "engines' worker processes need more than the default 64 MiB).",
        ),
        _rule(
            "image-registry",
            "mandatory",
            "resource",
            "Container images come from allowed registries.",
            allowedRegistries={
                "type": "array",
                "items": {"type": "string"},
                "default": list(DEFAULT_REGISTRIES),
                "description": "registry hosts; '*' globs allowed (swr.*.myhuaweicloud.com)",
            },
        ),
        _rule(
            "image-pinned",
            "mandatory",
            "resource",
            "Container images carry an explicit tag other than 'latest', or a digest.",
        ),
        _rule(
            "image-digest",
            "advisory",
            "resource",
            "Container images are pinned by digest (@sha256:...), so a re-pushed tag cannot change "
            "what runs.",
        ),
        _rule(
            "no-plain-secrets",
            "mandatory",
            "resource",
            "Environment variables named like keys, tokens, secrets or passwords come from a Secret "
            "(valueFrom.secretKeyRef), never a plain value; no env value or command-line argument "
            "holds a credential (an API key, a hub token, a private key) under any name.",
            allowedNames={
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "description": "variable names exempt from the check",
            },
        ),
        _rule(
            "probes",
            "mandatory",
            "resource",
            "Serving containers have startup, readiness and liveness probes.",
        ),
        _rule(
            "startup-budget",
            "mandatory",
            "resource",
            "The startup probe allows enough time (failureThreshold x periodSeconds) to load the model.",
            # Defaults are what the renderer sizes probes with, so rendered stacks pass by default.
            minStartupSeconds={"type": "integer", "minimum": 0, "default": MIN_STARTUP_SECONDS},
            loadSecondsPerGib={"type": "number", "minimum": 0, "default": LOAD_SECONDS_PER_GIB},
        ),
        _rule(
            "workspace-regions",
            "mandatory",
            "resource",
            "A workspace deploys only to the regions it is allowed ('*' for workspaces not listed; "
            "no entry, no limit).",
            allowedRegions={**_WORKSPACE_MAP, "default": {}},
        ),
        _rule(
            "ownership-labels",
            "mandatory",
            "resource",
            "Serving objects carry the modelfleet.io/workspace, serving and region labels (cost, "
            "audit and cleanup select on them).",
        ),
        _rule(
            "ascend-a3-even-devices",
            "advisory",
            "resource",
            "Ascend A3 (Atlas 900 A3 / 910C) pods take NPUs in pairs: an odd count wastes a die.",
        ),
        _rule(
            "hami-custom-all-reduce",
            "advisory",
            "resource",
            "Engines on HAMi-shared NVIDIA GPUs with tensor parallel > 1 pass "
            "--disable-custom-all-reduce (CUDA IPC fails across vGPUs).",
        ),
        _rule(
            "explicit-provider",
            "mandatory",
            "stack",
            "Every Kubernetes resource uses its region's explicit provider, never the default one.",
        ),
        _rule(
            "public-model-name",
            "mandatory",
            "stack",
            "Servings that expose the same model name run the same engine (and the same image on the "
            "same accelerator), so clients get one behaviour behind that name.",
        ),
        _rule(
            "workspace-devices",
            "mandatory",
            "stack",
            "A workspace's accelerator devices (replicas at the autoscaler's maximum x devices per "
            "replica) stay within its limit ('*' for workspaces not listed; no entry, no limit).",
            maxDevices={
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "default": {},
            },
        ),
        _rule(
            "public-model-replicas",
            "advisory",
            "stack",
            "A public model runs enough replicas in total to survive one pod restart.",
            minReplicas={"type": "integer", "minimum": 1, "default": 2},
        ),
    )
}


def settings(rule: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """A rule's settings: schema defaults overridden by `config` (the rule's own section)."""
    out = {key: schema.get("default") for key, schema in RULES[rule].settings.items()}
    for key, value in (config or {}).items():
        if key != "enforcementLevel":
            out[key] = value
    return out


def section(pack_config: Mapping[str, Any] | None, rule: str) -> dict[str, Any]:
    """The rule's section of a pack config (`{"rule": {...}}` or `{"rule": "advisory"}`)."""
    value = (pack_config or {}).get(rule)
    if isinstance(value, str):
        return {"enforcementLevel": value}
    return dict(value) if isinstance(value, Mapping) else {}


def level(pack_config: Mapping[str, Any] | None, rule: str) -> str:
    """Effective enforcement, as the engine decides it: the rule's section, else `all`, else the
    rule's default. Remediate counts as mandatory (no rule remediates)."""
    chosen = section(pack_config, rule).get("enforcementLevel")
    if chosen is None:
        chosen = section(pack_config, "all").get("enforcementLevel") or RULES[rule].level
    chosen = str(chosen)
    if chosen not in LEVELS:
        raise ValueError(f"policy config: {rule}: unknown enforcement level {chosen!r} ({', '.join(LEVELS)})")
    return "mandatory" if chosen == "remediate" else chosen


def per_workspace(table: Mapping[str, Any], workspace: str) -> Any:
    """A workspace's entry of a per-workspace setting, or the '*' entry, or None (no limit)."""
    if workspace in table:
        return table[workspace]
    return table.get("*")
