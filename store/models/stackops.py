"""How changes reach desired state: requests (one per user action) applied by jobs (one stack
update, possibly many requests coalesced), with their progress events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, JSONType, utcnow

PENDING = ("queued", "applying", "proposed")  # a request that may still change the stack


class RequestStatus(StrEnum):
    queued = "queued"  # waiting for a job
    applying = "applying"  # a job holds it
    proposed = "proposed"  # in an open pull request
    applied = "applied"  # committed / merged / up succeeded
    rejected = "rejected"  # pull request closed unmerged
    failed = "failed"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class StackRequest(Base):
    __tablename__ = "stack_requests"
    __table_args__ = (
        UniqueConstraint("workspace_id", "idempotency_key"),
        Index("ix_stack_requests_stack_status", "stack", "status"),
        Index("ix_stack_requests_job_id", "job_id"),
        # Two pending creations of one name would both pass the API's check on PostgreSQL; the
        # database refuses the second.
        Index(
            "uq_stack_requests_pending_create",
            "stack",
            "serving",
            unique=True,
            postgresql_where=text("action = 'create' AND status IN ('queued', 'applying', 'proposed')"),
            sqlite_where=text("action = 'create' AND status IN ('queued', 'applying', 'proposed')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id", ondelete="SET NULL"))
    serving: Mapped[str] = mapped_column(String(63))
    action: Mapped[str] = mapped_column(String(16))  # create | update | scale | stop | start | delete
    desired: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # serving file; None deletes
    # scale/stop/start: the replicas to set, applied to the serving as the job finds it (not the
    # whole file as the API saw it), so concurrent changes to one serving do not undo each other.
    change: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), default=None)  # method, path, body
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)  # preflight advisories
    fields: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType, default=None)  # why it failed
    actor: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.queued)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("stack_jobs.id", ondelete="SET NULL"), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StackJob(Base):
    __tablename__ = "stack_jobs"
    __table_args__ = (
        # At most one running job per stack, enforced by the database, not by hope.
        Index(
            "uq_stack_jobs_running",
            "stack",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    backend: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(100), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # commit, pull request, summary
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("stack_jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))  # status | log | diff | preview | result
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ServingRecord(Base):
    """Operational facts about a serving that do not belong in its spec: who owns it, and the
    replicas to restore when a stopped serving starts again."""

    __tablename__ = "serving_records"
    __table_args__ = (UniqueConstraint("stack", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    workspace_id: Mapped[int | None] = mapped_column(ForeignKey("workspaces.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(200))
    stopped_replicas: Mapped[list[int] | None] = mapped_column(default=None)  # per placement
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
