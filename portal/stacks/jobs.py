"""Durable stack jobs: claim the queued requests of a stack, run them through the backend, record
what happened; put jobs a crashed worker left behind back in the queue.

The rows are the queue. The API only inserts requests. A worker claims a stack by inserting a
`running` job for it: the partial unique index `uq_stack_jobs_running` lets exactly one such job
exist per stack, so a second worker (thread or process) gets an IntegrityError and moves on. Every
request queued for the stack at that moment joins the job (coalescing: one commit, one pull request
or one `pulumi up` for many requests).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal import audit, placements
from portal.services import Services
from portal.stacks.backends import BackendError, JobContext, Outcome, backend_for
from portal.stacks.changes import FILES_ACTION, RequestView
from store.db import transaction, utcnow
from store.models import JobEvent, JobStatus, RequestStatus, ServingRecord, StackJob, StackRequest, Workspace

log = logging.getLogger("modelfleet.portal.jobs")

TERMINAL = (JobStatus.succeeded, JobStatus.failed)
HEARTBEAT_SECONDS = 10.0
STALE_AFTER = timedelta(minutes=2)  # a running job whose heartbeat is older belongs to a dead worker
MAX_ATTEMPTS = 5  # a job that keeps killing its worker is failed, not retried forever
WORKER_ACTOR = "modelfleet-worker"


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def emit(
    services: Services, job_id: int, kind: str, message: str, data: dict[str, Any] | None = None
) -> None:
    """One progress event, committed at once so followers of the stream see it now."""
    with transaction(services.sessions) as session:
        session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data or {}))


# -- claiming -----------------------------------------------------------------------------------------


def _mark_running(job: StackJob, worker: str) -> None:
    now = utcnow()
    job.status, job.worker, job.started_at, job.heartbeat_at = JobStatus.running, worker, now, now


@dataclass(frozen=True, slots=True)
class Settle:
    """When a stack's queued requests are worth a job: once none has arrived for `quiet` seconds, or
    the oldest has waited `longest` seconds. A burst of requests then becomes one stack update
    instead of one per poll; a lone request waits `quiet` seconds more."""

    quiet: float = 0.0
    longest: float = 0.0

    def ready(self, now: datetime, oldest: datetime, newest: datetime) -> bool:
        return (now - newest).total_seconds() >= self.quiet or (now - oldest).total_seconds() >= self.longest


NOW = Settle()  # tests and one-shot runs: claim whatever is queued
BURSTS = Settle(quiet=0.3, longest=2.0)  # the worker thread


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


def claim(services: Services, worker: str, settle: Settle = NOW) -> int | None:
    """Start one job, if any stack has work and no running job: a recovered job first (it keeps its
    own requests), else a new job taking every request queued for the stack (once `settle` says the
    burst is over)."""
    with transaction(services.sessions) as session:
        busy = set(session.scalars(select(StackJob.stack).where(StackJob.status == JobStatus.running)))
        recovered = session.scalars(
            select(StackJob.id).where(StackJob.status == JobStatus.queued).order_by(StackJob.id)
        ).all()
        for job_id in recovered:
            job = session.get(StackJob, job_id)
            if job is None or job.stack in busy:
                continue
            try:
                with session.begin_nested():
                    claimed = session.execute(
                        update(StackJob)
                        .where(StackJob.id == job_id, StackJob.status == JobStatus.queued)
                        .values(
                            status=JobStatus.running,
                            worker=worker,
                            attempts=StackJob.attempts + 1,
                            started_at=utcnow(),
                            heartbeat_at=utcnow(),
                        )
                    )
            except IntegrityError:  # another worker started a job on this stack just now
                busy.add(job.stack)
                continue
            if getattr(claimed, "rowcount", 0) == 1:
                session.add(
                    JobEvent(job_id=job_id, kind="status", message="running", data={"status": "running"})
                )
                return job_id
        waiting = session.execute(
            select(StackRequest.stack, func.min(StackRequest.created_at), func.max(StackRequest.created_at))
            .where(StackRequest.status == RequestStatus.queued, StackRequest.job_id.is_(None))
            .group_by(StackRequest.stack)
        ).all()
        now = utcnow()
        ready = [stack for stack, oldest, newest in waiting if settle.ready(now, _utc(oldest), _utc(newest))]
        for stack in sorted(set(ready) - busy):
            job = StackJob(stack=stack, backend=services.settings.stack_backend, attempts=1, result={})
            _mark_running(job, worker)
            try:
                with session.begin_nested():
                    session.add(job)
                    session.flush()
            except IntegrityError:
                continue
            requests = session.scalars(
                select(StackRequest)
                .where(
                    StackRequest.stack == stack,
                    StackRequest.status == RequestStatus.queued,
                    StackRequest.job_id.is_(None),
                )
                .order_by(StackRequest.id)
                .with_for_update(skip_locked=True)
            ).all()
            if not requests:
                session.delete(job)
                continue
            for request in requests:
                request.job_id, request.status = job.id, RequestStatus.applying
            session.add(
                JobEvent(
                    job_id=job.id,
                    kind="status",
                    message="running",
                    data={"status": "running", "requests": [r.id for r in requests]},
                )
            )
            return job.id
    return None


# -- running ------------------------------------------------------------------------------------------


class Heartbeat:
    """Touches the job's heartbeat while it runs, so other workers can tell it is alive."""

    def __init__(self, services: Services, job_id: int, worker: str, every: float = HEARTBEAT_SECONDS):
        self._services, self._job_id, self._worker, self._every = services, job_id, worker, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with transaction(self._services.sessions) as session:
                    session.execute(
                        update(StackJob)
                        .where(StackJob.id == self._job_id, StackJob.worker == self._worker)
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:  # a missed beat is not worth stopping the job for
                log.warning("heartbeat of job %s failed", self._job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def request_views(session: Session, job_id: int) -> list[RequestView]:
    rows = session.execute(
        select(StackRequest, Workspace.slug)
        .outerjoin(Workspace, Workspace.id == StackRequest.workspace_id)
        .where(StackRequest.job_id == job_id)
        .order_by(StackRequest.id)
    ).all()
    return [RequestView(r.id, r.serving, r.action, r.desired, r.change, r.actor, slug) for r, slug in rows]


def execute(services: Services, job_id: int, worker: str) -> None:
    """Run a claimed job to its end; never raises for a failing change (the job fails instead)."""
    with transaction(services.sessions) as session:
        job = session.get(StackJob, job_id)
        if job is None:
            return
        backend_name, stack, attempt = job.backend, job.stack, job.attempts
        views = request_views(session, job_id)
    context = JobContext(
        services, job_id, stack, attempt, views, emit=lambda k, m, d: emit(services, job_id, k, m, d)
    )
    outcome: Outcome | None = None
    error: str | None = None
    partial: dict[str, Any] = {}
    with Heartbeat(services, job_id, worker):
        try:
            outcome = backend_for(services, backend_name).apply(context)
        except BackendError as exc:
            error, partial = str(exc), exc.result
        except Exception as exc:
            log.exception("job %s failed", job_id)
            error = f"internal error ({type(exc).__name__}: {exc}); see the portal log"
    finish(services, job_id, worker, outcome, error, partial)
    if outcome is not None:
        placements.publish(services, stack)


def finish(
    services: Services,
    job_id: int,
    worker: str,
    outcome: Outcome | None,
    error: str | None,
    partial: dict[str, Any] | None = None,
) -> None:
    with transaction(services.sessions) as session:
        job = session.execute(select(StackJob).where(StackJob.id == job_id).with_for_update()).scalar_one()
        if job.status != JobStatus.running or job.worker != worker:
            log.warning("job %s was taken over by %s; dropping this worker's result", job_id, job.worker)
            return
        rows = session.execute(
            select(StackRequest, Workspace.slug)
            .outerjoin(Workspace, Workspace.id == StackRequest.workspace_id)
            .where(StackRequest.job_id == job_id)
            .order_by(StackRequest.id)
        ).all()
        succeeded = 0
        for request, slug in rows:
            if outcome is None:
                request.status, request.error = RequestStatus.failed, error
            elif request.id in outcome.statuses:
                request.status, request.error, request.fields = outcome.statuses[request.id], None, None
                succeeded += 1
                if request.status == RequestStatus.applied:
                    note_applied(session, request)
            else:
                refused = outcome.refused.get(request.id)
                request.status = RequestStatus.failed
                request.error = str(refused) if refused else "the backend did not report on this request"
                request.fields = refused.fields if refused else None
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="request",
                    message=f"#{request.id} {request.action} {request.serving}: {request.status}",
                    data={
                        "request": request.id,
                        "serving": request.serving,
                        "status": request.status,
                        "error": request.error,
                        "fields": request.fields or [],
                        "workspace": slug,
                    },
                )
            )
        if outcome is not None and rows and not succeeded:
            error = "no request could be applied; see each request's error"
        job.status = JobStatus.failed if error else JobStatus.succeeded
        job.error = error
        job.result = outcome.result if outcome is not None else dict(partial or {})
        job.finished_at = job.heartbeat_at = utcnow()
        detail = error or _describe(job.result)
        audit.record(
            session,
            actor=WORKER_ACTOR,
            action="ApplyStackUpdate",
            resource_type="StackJob",
            resource_id=job.id,
            after={
                "stack": job.stack,
                "backend": job.backend,
                "requests": {str(r.id): r.status for r, _ in rows},
                "result": job.result,
            },
            result="failure" if error else "success",
            detail=detail,
        )
        session.add(
            JobEvent(
                job_id=job_id,
                kind="status",
                message=job.status,
                data={"status": job.status, "error": error, "result": job.result},
            )
        )


def _describe(result: dict[str, Any]) -> str:
    pr = result.get("pull_request")
    if isinstance(pr, dict):
        return f"pull request #{pr.get('number')} {pr.get('state', 'open')}: {pr.get('url', '')}"
    if result.get("commit"):
        return f"commit {result['commit']}"
    return "no change"


# -- what an applied request means for the serving's record ------------------------------------------


def _record(session: Session, stack: str, name: str) -> ServingRecord | None:
    return session.scalar(
        select(ServingRecord).where(ServingRecord.stack == stack, ServingRecord.name == name)
    )


def _ensure_record(session: Session, request: StackRequest) -> ServingRecord:
    record = _record(session, request.stack, request.serving)
    if record is not None:
        return record
    record = ServingRecord(
        stack=request.stack, name=request.serving, workspace_id=request.workspace_id, created_by=request.actor
    )
    try:
        with session.begin_nested():
            session.add(record)
            session.flush()
    except IntegrityError:  # written by a concurrent pull-request sync
        found = _record(session, request.stack, request.serving)
        assert found is not None
        return found
    return record


def note_applied(session: Session, request: StackRequest) -> None:
    """Owner on creation, replicas to restore on stop, forgotten on delete; nothing for a
    model-files file (its request's own rows say how the copies go)."""
    if request.action == FILES_ACTION:
        return
    if request.action == "delete":
        record = _record(session, request.stack, request.serving)
        if record is not None:
            session.delete(record)
        return
    record = _ensure_record(session, request)
    if request.action == "create":
        record.workspace_id, record.created_by, record.stopped_replicas = (
            request.workspace_id,
            request.actor,
            None,
        )
    elif request.action == "stop":
        record.stopped_replicas = list((request.change or {}).get("stopped_replicas") or []) or None
    elif request.action in ("start", "scale", "update"):
        record.stopped_replicas = None


# -- crash recovery -----------------------------------------------------------------------------------


def recover(services: Services, *, stale_after: timedelta | None = STALE_AFTER) -> list[int]:
    """Put running jobs back in the queue: those whose heartbeat is older than `stale_after`, or all
    of them with `stale_after=None` (a single process starting: nobody else can be running them).
    Their requests stay theirs; re-running is safe because every backend checks what it already did."""
    requeued: list[int] = []
    with transaction(services.sessions) as session:
        query = select(StackJob).where(StackJob.status == JobStatus.running)
        if stale_after is not None:
            cutoff = utcnow() - stale_after
            query = query.where(or_(StackJob.heartbeat_at.is_(None), StackJob.heartbeat_at < cutoff))
        for job in session.scalars(query.order_by(StackJob.id).with_for_update(skip_locked=True)).all():
            if job.attempts >= MAX_ATTEMPTS:
                _give_up(session, job)
                continue
            job.status, job.worker = JobStatus.queued, None
            session.add(
                JobEvent(
                    job_id=job.id,
                    kind="status",
                    message="queued",
                    data={"status": "queued", "reason": "its worker stopped; it will run again"},
                )
            )
            requeued.append(job.id)
    if requeued:
        log.warning("re-queued stack jobs left running by a stopped worker: %s", requeued)
    return requeued


def _give_up(session: Session, job: StackJob) -> None:
    error = f"gave up after {job.attempts} attempts: the worker stopped during each of them"
    job.status, job.error, job.finished_at = JobStatus.failed, error, utcnow()
    for request in session.scalars(select(StackRequest).where(StackRequest.job_id == job.id)):
        if request.status == RequestStatus.applying:
            request.status, request.error = RequestStatus.failed, error
    audit.record(
        session,
        actor=WORKER_ACTOR,
        action="ApplyStackUpdate",
        resource_type="StackJob",
        resource_id=job.id,
        after={"stack": job.stack, "backend": job.backend},
        result="failure",
        detail=error,
    )
    session.add(
        JobEvent(job_id=job.id, kind="status", message="failed", data={"status": "failed", "error": error})
    )


# -- pull requests: merged means applied, closed means rejected ---------------------------------------


def record_pull_request(services: Services, job_id: int, state: str, *, actor: str = WORKER_ACTOR) -> bool:
    """Move a pull-request job's proposed requests on when its pull request is merged or closed;
    False when there was nothing to do (still open, or already recorded)."""
    if state not in ("merged", "closed"):
        return False
    with transaction(services.sessions) as session:
        job = session.execute(
            select(StackJob).where(StackJob.id == job_id).with_for_update()
        ).scalar_one_or_none()
        pr = (job.result or {}).get("pull_request") if job is not None else None
        if job is None or not isinstance(pr, dict) or pr.get("state") != "open":
            return False
        job.result = {**job.result, "pull_request": {**pr, "state": state}}
        new = RequestStatus.applied if state == "merged" else RequestStatus.rejected
        requests = session.scalars(
            select(StackRequest)
            .where(StackRequest.job_id == job_id, StackRequest.status == RequestStatus.proposed)
            .order_by(StackRequest.id)
        ).all()
        for request in requests:
            request.status = new
            if new == RequestStatus.rejected:
                request.error = f"pull request #{pr.get('number')} was closed without merging"
            else:
                note_applied(session, request)
        detail = (
            f"pull request #{pr.get('number')} {'merged' if state == 'merged' else 'closed without merging'}"
        )
        audit.record(
            session,
            actor=actor,
            action="ApplyStackUpdate",
            resource_type="StackJob",
            resource_id=job.id,
            after={"stack": job.stack, "pull_request": job.result["pull_request"]},
            result="success" if state == "merged" else "failure",
            detail=detail,
        )
        session.add(
            JobEvent(
                job_id=job_id,
                kind="pull_request",
                message=detail,
                data={"state": state, "number": pr.get("number"), "requests": [r.id for r in requests]},
            )
        )
    if state == "merged":
        try:
            services.repository.pull()
        except Exception:  # the next merge or restart catches up; the requests are applied either way
            log.warning("could not update the local stacks repository after a merge", exc_info=True)
    return True


def proposed_jobs(services: Services) -> list[int]:
    with transaction(services.sessions) as session:
        return list(
            session.scalars(
                select(StackRequest.job_id)
                .where(StackRequest.status == RequestStatus.proposed, StackRequest.job_id.is_not(None))
                .distinct()
            )
        )


def sync_pull_request(services: Services, job_id: int, *, actor: str = WORKER_ACTOR) -> str:
    """Ask the API about the job's pull request and record a merge or a close; the state seen."""
    from portal.stacks.backends.github import GitHub

    with transaction(services.sessions) as session:
        job = session.get(StackJob, job_id)
        pr = (job.result or {}).get("pull_request") if job is not None else None
    if not isinstance(pr, dict) or "number" not in pr:
        raise BackendError(f"job {job_id} has no pull request")
    if pr.get("state") != "open":
        return str(pr.get("state"))
    state = GitHub(services.settings).pull_request_state(int(pr["number"]))
    record_pull_request(services, job_id, state, actor=actor)
    return state
