"""Preflight: everything wrong with applying a serving change to a stack, before anything is queued.

Today: the core's rules (`fleet.rules.preflight`: spec, plan, flags, policies) against the stack at
HEAD. The portal refuses a request whose report is blocking and keeps the report with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.rules import preflight as core_preflight
from portal.services import Services
from portal.stacks.repository import StackSnapshot


@dataclass(frozen=True, slots=True)
class Check:
    rule: str
    level: str  # mandatory | advisory | info
    subject: str
    message: str

    @property
    def blocking(self) -> bool:
        return self.level == "mandatory"


@dataclass(frozen=True)
class PreflightReport:
    serving: str
    commit: str
    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. model files found and their total size

    @property
    def blocking(self) -> bool:
        return any(c.blocking for c in self.checks)


def run(services: Services, snapshot: StackSnapshot, desired: dict[str, Any]) -> PreflightReport:
    """Check `desired` (a serving file's content) as a new serving or a replacement of its namesake."""
    del services  # used by the model-store check
    findings = core_preflight(snapshot.fleet, desired, snapshot.policy_config)
    checks = [Check(f.rule, f.level, f.subject, f.message) for f in findings]
    return PreflightReport(str(desired.get("name", "")), snapshot.commit, checks)
