"""A model-files request as desired state: the stack file `stacks/<stack>/model-files/<model>.yaml`
that makes `pulumi up` run a copy Job in each of its cluster regions (`fleet.spec.ModelFiles`).

The file is worked out from the request's rows after every change (request, retry, cancel, delete)
and queued as a stack request, in the same transaction and with its audit row, so it reaches git
through the same worker, backend (commit, pull request, Pulumi) and refusals as a serving change.
It lists every cluster region whose copy is not cancelled, each with the attempt its Job runs (a
retry is a new attempt, so a new Job); with none left, the file is removed and so are its Jobs.
`local` regions are never in it: the portal's own worker copies them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from portal import audit
from portal.context import current_request_id
from portal.files.records import RESOURCE
from portal.settings import Settings
from portal.stacks.changes import FILES_ACTION, FILES_PREFIX
from store.models import ModelFiles, RequestStatus, StackRequest

REPORT_TOKEN = {"name": "modelfleet-files-report", "key": "token"}


class NoReportUrl(Exception):
    """Cluster regions need the portal's URL as they reach it (MODELFLEET_FILES_REPORT_URL)."""


def on_clusters(row: ModelFiles) -> bool:
    return any(loc.runtime == "kubernetes" for loc in row.locations)


def attempt(state: str, attempt: int) -> int:
    """The attempt a region's Job runs: a queued copy is the next one (its Job reports it)."""
    return max(1, attempt + (1 if state == "queued" else 0))


def document(row: ModelFiles, settings: Settings) -> dict[str, Any] | None:
    """The request's stack file, or None when no cluster region's copy is wanted any more."""
    regions = [
        {"name": loc.region, "attempt": attempt(loc.state, loc.attempt)}
        for loc in sorted(row.locations, key=lambda loc: loc.region)
        if loc.runtime == "kubernetes" and loc.state != "cancelled"
    ]
    if not regions:
        return None
    if settings.files_report_url is None:
        raise NoReportUrl("set MODELFLEET_FILES_REPORT_URL (the portal's URL as clusters reach it) first")
    doc: dict[str, Any] = {
        "name": row.model_id,
        "id": row.id,
        "source": row.source,
        "repository": row.repository,
    }
    if row.revision:
        doc["revision"] = row.revision
    if row.include:
        doc["include"] = list(row.include)
    if row.exclude:
        doc["exclude"] = list(row.exclude)
    doc["regions"] = regions
    doc["image"] = settings.files_job_image
    doc["report_url"] = settings.files_report_url
    doc["report_token"] = dict(REPORT_TOKEN)
    return doc


def queue(session: Session, row: ModelFiles, doc: dict[str, Any] | None, actor: str) -> StackRequest:
    """Queue the stack update that writes `doc` (None removes the file), audited."""
    request = StackRequest(
        stack=row.stack,
        workspace_id=None,
        serving=f"{FILES_PREFIX}{row.id}",
        action=FILES_ACTION,
        desired=doc,
        change={"name": row.model_id, "files_id": row.id},
        actor=actor,
        request_id=current_request_id(),
        status=RequestStatus.queued,
    )
    session.add(request)
    session.flush()
    path = f"{row.stack}/model-files/{row.model_id}.yaml"
    audit.record(
        session,
        actor=actor,
        action="QueueModelFilesStackUpdate",
        resource_type=RESOURCE,
        resource_id=row.id,
        after={"file": path, "regions": [r["name"] for r in doc["regions"]] if doc else None},
        detail=f"stack request {request.id}: " + (f"write {path}" if doc else f"remove {path}"),
    )
    return request


def sync(
    session: Session, row: ModelFiles, settings: Settings, actor: str, *, removed: bool = False
) -> int | None:
    """After a change to `row`: queue its stack file (or its removal when `removed`); the stack
    request's id, or None for a request that never had a cluster region."""
    if not on_clusters(row):
        return None
    doc = None if removed else document(row, settings)
    return queue(session, row, doc, actor).id


__all__ = ["NoReportUrl", "document", "on_clusters", "queue", "sync"]
