"""Model files on clusters: the Job that copies a request's files into a cluster region (rendered by the
core from the request's stack file, schema-checked; `pulumi up` applies it, this shows it), and the
reports it sends back while it runs (`python -m portal.files copy --report-url`). Platform admins
only, like the rest of `/api/model-files`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from fleet.files_job import files_job as render_files_job
from fleet.files_job import from_spec
from fleet.kube import validate_manifest
from fleet.spec import ModelFiles as ModelFiles_
from fleet.spec import SecretKey
from portal.api.model_files import LocationOut, get_row
from portal.auth import AdminDep, ServicesDep, SessionDep
from portal.errors import ERROR_RESPONSES, Conflict, NotFound
from portal.files import desired, records
from portal.files.progress import Progress
from portal.messages import msg
from store.models import ModelFiles, ModelFilesLocation

router = APIRouter(prefix="/api", tags=["model-files"], responses=ERROR_RESPONSES)
# The ops token a copy Job reports with, in each region's namespace (docs/ops-guide.md, "Model files").
REPORT_TOKEN = SecretKey.model_validate(desired.REPORT_TOKEN)


class ReportIn(BaseModel):
    """What a copy Job reports (`python -m portal.files copy --report-url`)."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["downloading", "verifying", "ready", "failed", "cancelled"]
    bytes_done: int = Field(0, ge=0)
    bytes_total: int = Field(0, ge=0)
    files_done: int = Field(0, ge=0)
    files_total: int = Field(0, ge=0)
    rate: float = Field(0.0, ge=0)
    eta_seconds: float | None = Field(None, ge=0)
    reason: str | None = Field(None, max_length=4000)
    commit: str | None = Field(None, max_length=64, description="a commit, or what the source pins by")


def _location(row: ModelFiles, region: str) -> ModelFilesLocation:
    for loc in row.locations:
        if loc.region == region:
            return loc
    raise NotFound(msg("no copy into region {name!r} was requested", name=region))


@router.post("/model-files/{files_id}/regions/{region}:report", response_model=LocationOut)
def report_files(files_id: int, region: str, body: ReportIn, session: SessionDep, _: AdminDep) -> LocationOut:
    """A cluster region's copy Job reports its progress; the answer says whether ops cancelled it."""
    with session.begin():
        row = get_row(session, files_id)
        loc = _location(row, region)
        if loc.state == "cancelled" and loc.cancel_requested:
            # Cancelled while its Job ran (the stack update deletes the Job): tell it to stop; its
            # own `cancelled` closes the matter.
            if body.state == "cancelled":
                loc.cancel_requested = False
            return LocationOut.model_validate(records.location_view(loc))
        if loc.state in ("ready", "failed", "cancelled"):
            raise Conflict(
                msg(
                    "the copy into {name!r} already ended ({state}); retry it first",
                    name=region,
                    state=loc.state,
                )
            )
        records.report(
            loc,
            Progress(
                "downloading",
                body.bytes_done,
                body.bytes_total,
                body.files_done,
                body.files_total,
                body.rate,
                body.eta_seconds,
            ),
        )
        if body.state in ("downloading", "verifying"):
            if loc.state == "queued":
                loc.attempt += 1
            records.transition(session, row, loc, body.state, None)
        else:
            records.finish(session, row, loc, body.state, body.reason, body.commit or None)
        return LocationOut.model_validate(records.location_view(loc))


@router.get("/model-files/{files_id}/regions/{region}/job")
def files_job(
    files_id: int, region: str, session: SessionDep, _: AdminDep, services: ServicesDep
) -> dict[str, Any]:
    """The Kubernetes Job that copies the files into a cluster region (schema-checked), exactly as the
    stack applies it from `stacks/<stack>/model-files/<model>.yaml`; it reports back here."""
    with session.begin():
        row = get_row(session, files_id)
        _location(row, region)
        fleet = services.repository.snapshot(row.stack).fleet
        if region not in fleet.regions:
            raise NotFound(
                msg(
                    "no region {name!r} in stack {stack!r} (have: {have})",
                    name=region,
                    stack=row.stack,
                    have=", ".join(fleet.regions),
                )
            )
        target = fleet.regions[region]
        if target.runtime != "kubernetes":
            raise Conflict(
                msg("region {name!r} runs no Jobs: the portal copies its files itself", name=region)
            )
        report_url = services.settings.files_report_url
        if report_url is None:
            raise Conflict(
                msg("set MODELFLEET_FILES_REPORT_URL (the portal's URL as clusters reach it) first")
            )
        doc = desired.document(row, services.settings)
        spec = ModelFiles_.model_validate(doc) if doc is not None else None
        attempt = next((r.attempt for r in spec.regions if r.name == region), None) if spec else None
        if spec is None or attempt is None:
            raise Conflict(
                msg("the copy into {name!r} is cancelled: the stack holds no Job for it", name=region)
            )
        job = from_spec(spec, attempt)
    manifest = render_files_job(job, target)
    problems = validate_manifest(manifest, fleet.platform.kubernetes_version)
    if problems:  # the core rendered something the API server would refuse: our bug, said plainly
        raise Conflict(
            msg("the rendered Job fails the Kubernetes schema: {problems}", problems="; ".join(problems))
        )
    return manifest


__all__ = ["REPORT_TOKEN", "router"]
