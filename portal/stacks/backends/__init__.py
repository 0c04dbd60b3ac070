"""How a job's requests reach desired state: one `StackBackend` per way of writing it.

- `git` (default): one commit in the local stacks repository per job.
- `pull-request`: one branch and pull request per job on a GitHub-compatible API; merged -> applied.
- `pulumi`: commit like `git`, then preview and `up` through the Automation API.

A backend gets the job's requests (already coalesced, in order) and returns what became of each;
the job runner owns the database side (statuses, audit, events).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from portal.services import Services
from portal.stacks.changes import Refused, RequestView

BACKENDS = ("git", "pull-request", "pulumi")


class BackendError(Exception):
    """The whole job failed; the message says why in words an operator can act on. `result` keeps
    what was done before the failure (a commit the Pulumi update then failed to apply)."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


@dataclass
class JobContext:
    services: Services
    job_id: int
    stack: str
    attempt: int  # 1 on the first run; more after crash recovery
    requests: list[RequestView]
    emit: Callable[[str, str, dict[str, Any]], None] = lambda kind, message, data: None

    def note(self, kind: str, message: str, **data: Any) -> None:
        self.emit(kind, message, data)


@dataclass
class Outcome:
    statuses: dict[int, str] = field(default_factory=dict)  # request id -> applied | proposed
    refused: dict[int, Refused] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)  # commit, pull request, update summary


class StackBackend(Protocol):
    name: str

    def apply(self, job: JobContext) -> Outcome: ...


def backend_for(services: Services, name: str | None = None) -> StackBackend:
    chosen = name or services.settings.stack_backend
    if chosen == "git":
        from portal.stacks.backends.git import GitBackend

        return GitBackend()
    if chosen == "pull-request":
        from portal.stacks.backends.github import PullRequestBackend

        return PullRequestBackend()
    if chosen == "pulumi":
        from portal.stacks.backends.pulumi import PulumiBackend

        return PulumiBackend()
    raise BackendError(f"unknown stack backend {chosen!r} (known: {', '.join(BACKENDS)})")
