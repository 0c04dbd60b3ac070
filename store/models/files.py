"""Model files: a plaza model's files requested from a hub into regions' model stores, the status of
each region's copy, and the history of its transitions.

One `ModelFiles` row per (stack, model): its source, revision (and the commit it resolved to, so the
files are pinned) and patterns. One `ModelFilesLocation` per region it was requested into, with the
state the downloader last reported there; `ModelFilesEvent` keeps every transition, and outlives a
deleted request (its history stays readable).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.db import Base, utcnow

# queued → downloading → verifying → ready; or failed (reason) / cancelled, from which a retry
# queues again.
FILES_STATES = ("queued", "downloading", "verifying", "ready", "failed", "cancelled")
ACTIVE_STATES = ("queued", "downloading", "verifying")


class ModelFiles(Base):
    __tablename__ = "model_files"
    __table_args__ = (UniqueConstraint("stack", "model_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(128), index=True)  # the plaza model; the store folder's name
    source: Mapped[str] = mapped_column(String(16))  # hf | modelscope | s3 | https
    repository: Mapped[str] = mapped_column(String(2048))  # org/name, s3://bucket/prefix, or the URL
    revision: Mapped[str] = mapped_column(String(255), default="")  # as asked (branch, tag or commit)
    commit: Mapped[str | None] = mapped_column(String(64), default=None)  # as the hub resolved it
    include: Mapped[list[str]] = mapped_column(default=list)
    exclude: Mapped[list[str]] = mapped_column(default=list)
    requested_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    locations: Mapped[list[ModelFilesLocation]] = relationship(
        back_populates="files",
        cascade="all, delete-orphan",
        order_by="ModelFilesLocation.region",
        lazy="selectin",
    )


class ModelFilesLocation(Base):
    """One region's copy: where it goes and how far it is, as last reported by whoever downloads it."""

    __tablename__ = "model_files_locations"
    __table_args__ = (UniqueConstraint("files_id", "region"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    files_id: Mapped[int] = mapped_column(ForeignKey("model_files.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(63))
    runtime: Mapped[str] = mapped_column(String(16))  # local: the control plane's worker; kubernetes: a Job
    uri: Mapped[str] = mapped_column(String(2048))  # s3://bucket/prefix/<model id>
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    files_done: Mapped[int] = mapped_column(default=0)
    files_total: Mapped[int] = mapped_column(default=0)
    rate: Mapped[float] = mapped_column(default=0.0)  # bytes per second
    eta_seconds: Mapped[float | None] = mapped_column(default=None)
    attempt: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(100), default=None)  # who holds the download
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    files: Mapped[ModelFiles] = relationship(back_populates="locations")


class ModelFilesEvent(Base):
    """A transition of one region's copy (kept after the request is deleted)."""

    __tablename__ = "model_files_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    files_id: Mapped[int] = mapped_column(index=True)
    stack: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    files_done: Mapped[int] = mapped_column(default=0)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
