"""observed state: serving placements, replicas and their events

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "serving_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack", sa.String(length=63), nullable=False),
        sa.Column("serving", sa.String(length=63), nullable=False),
        sa.Column("workspace", sa.String(length=63), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("replica", sa.String(length=253), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_events")),
    )
    with op.batch_alter_table("serving_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_serving_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_serving_events_workspace"), ["workspace"], unique=False)

    op.create_table(
        "serving_placements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack", sa.String(length=63), nullable=False),
        sa.Column("serving", sa.String(length=63), nullable=False),
        sa.Column("workspace", sa.String(length=63), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("runtime", sa.String(length=16), nullable=False),
        sa.Column("public_name", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=500), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column(
            "launch",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("ready_replicas", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_placements")),
        sa.UniqueConstraint("stack", "serving", "region", "pool", name=op.f("uq_serving_placements_stack")),
    )
    with op.batch_alter_table("serving_placements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_serving_placements_serving"), ["serving"], unique=False)

    op.create_table(
        "serving_replicas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("placement_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["placement_id"],
            ["serving_placements.id"],
            name=op.f("fk_serving_replicas_placement_id_serving_placements"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_replicas")),
        sa.UniqueConstraint("placement_id", "name", name=op.f("uq_serving_replicas_placement_id")),
    )


def downgrade() -> None:

    op.drop_table("serving_replicas")
    with op.batch_alter_table("serving_placements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_placements_serving"))

    op.drop_table("serving_placements")
    with op.batch_alter_table("serving_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_serving_events_workspace"))
        batch_op.drop_index(batch_op.f("ix_serving_events_at"))

    op.drop_table("serving_events")
