"""What runs: each serving placement's desired shape (published from git by the control plane), its
observed state and replicas (written by the region's observer), and the history of its transitions.

The gateway routes only by these rows: a placement's in-cluster endpoint while some replicas are
ready (`kubernetes` regions), or each ready replica's own address (`local` regions).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.db import Base, JSONType, utcnow


class ServingPlacement(Base):
    """One placement of one serving (serving × region × pool)."""

    __tablename__ = "serving_placements"
    __table_args__ = (UniqueConstraint("stack", "serving", "region", "pool"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    serving: Mapped[str] = mapped_column(String(63), index=True)
    workspace: Mapped[str] = mapped_column(String(63))  # the serving's owner ("platform": ops)
    region: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    position: Mapped[int] = mapped_column(default=0)  # index in the serving's placements
    runtime: Mapped[str] = mapped_column(String(16), default="kubernetes")  # kubernetes | local
    public_name: Mapped[str] = mapped_column(String(255))  # the served model name
    endpoint: Mapped[str] = mapped_column(String(500))  # in-cluster base URL (kubernetes)
    desired_replicas: Mapped[int] = mapped_column(default=0)
    weight: Mapped[int] = mapped_column(default=1)
    launch: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # argv, env, port, probes
    revision: Mapped[str] = mapped_column(String(64), default="")  # digest of launch + replicas
    # observed
    state: Mapped[str] = mapped_column(String(16), default="committed")
    ready_replicas: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(String(100), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    observed_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    replicas: Mapped[list[ServingReplica]] = relationship(
        back_populates="placement", cascade="all, delete-orphan", order_by="ServingReplica.name"
    )


class ServingReplica(Base):
    """One replica: a pod (or a LeaderWorkerSet group) on a cluster, a process on a local region."""

    __tablename__ = "serving_replicas"
    __table_args__ = (UniqueConstraint("placement_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    placement_id: Mapped[int] = mapped_column(ForeignKey("serving_placements.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(100), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    url: Mapped[str | None] = mapped_column(String(500), default=None)  # own address (local runtime)
    restarts: Mapped[int] = mapped_column(default=0)
    exit_code: Mapped[int | None] = mapped_column(default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # pid, log, node, image
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    placement: Mapped[ServingPlacement] = relationship(back_populates="replicas")


class ServingEvent(Base):
    """A transition of a placement or a replica, kept as history (and streamed)."""

    __tablename__ = "serving_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    stack: Mapped[str] = mapped_column(String(63))
    serving: Mapped[str] = mapped_column(String(63))
    workspace: Mapped[str] = mapped_column(String(63), index=True)
    region: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    replica: Mapped[str | None] = mapped_column(String(253), default=None)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(100), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
