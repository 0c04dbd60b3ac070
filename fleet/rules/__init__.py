"""GPU-serving guardrails, as plain functions over manifests, the fleet and its plan.

One set of rules, three callers: the Pulumi policy pack (`policies/validators.py` wraps each rule in a
`ResourceValidationPolicy` or `StackValidationPolicy`), the offline check (`python -m fleet check`,
through `policies/offline.py`) and the portal, which calls `preflight` on a deploy request before
anything is written. No Pulumi import here: the rules see wire-format dicts (or the engine's
read-only proxies of them) and return messages that name the resource and the fix.

- `RULES`: name -> `Rule` (description, default enforcement, resource/stack scope, settings schema)
- `RESOURCE_CHECKS` / `STACK_CHECKS`: name -> the function implementing it
- `settings(rule, section)`: a rule's settings with the schema's defaults filled in
- `preflight(fleet, serving, config)`, `check_rendering(rendering, config)`: `Finding`s
"""

from fleet.rules.base import RULES, Finding, Level, Rule, level, section, settings
from fleet.rules.preflight import check_objects, check_rendering, plan_findings, preflight, rendered_objects
from fleet.rules.resource import CHECKS as RESOURCE_CHECKS
from fleet.rules.stack import CHECKS as STACK_CHECKS
from fleet.rules.stack import StackMessage, StackResource

__all__ = [
    "RESOURCE_CHECKS",
    "RULES",
    "STACK_CHECKS",
    "Finding",
    "Level",
    "Rule",
    "StackMessage",
    "StackResource",
    "check_objects",
    "check_rendering",
    "level",
    "plan_findings",
    "preflight",
    "rendered_objects",
    "section",
    "settings",
]
