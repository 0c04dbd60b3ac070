"""One rooted error tree for the pure core.

Every error carries the YAML path of what is wrong (`servings[qwen].placements[0].pool`) so that a
CLI user, a pull-request reviewer and a portal form can all point at the same field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a stack: where it is and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FleetError(Exception):
    """Root of every error the core raises on purpose."""


class IssuesError(FleetError):
    """A batch of issues found together, reported together (users fix them in one pass)."""

    kind = "error"

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class SpecError(IssuesError):
    """The stack files do not describe a valid fleet."""

    kind = "spec"


class FlagError(IssuesError):
    """An engine argument is not accepted by the engine version the image runs."""

    kind = "flags"


class PlanError(IssuesError):
    """The servings do not fit the hardware they are placed on."""

    kind = "plan"


class TemplateError(IssuesError):
    """A deploy template is missing or failed to render."""

    kind = "template"


class ManifestError(IssuesError):
    """A rendered Kubernetes object is not valid for the cluster's API."""

    kind = "manifest"


class RenderError(IssuesError):
    """Some placements could not be rendered (flags, images, templates); all are listed."""

    kind = "render"
