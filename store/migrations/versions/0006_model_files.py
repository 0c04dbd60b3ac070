"""model files: requests of a plaza model's files into regions' stores, each region's copy, history

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stack", sa.String(length=63), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("repository", sa.String(length=2048), nullable=False),
        sa.Column("revision", sa.String(length=255), nullable=False),
        sa.Column("commit", sa.String(length=64), nullable=True),
        sa.Column(
            "include",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "exclude",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files")),
        sa.UniqueConstraint("stack", "model_id", name=op.f("uq_model_files_stack")),
    )
    with op.batch_alter_table("model_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_files_model_id"), ["model_id"], unique=False)

    op.create_table(
        "model_files_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("files_id", sa.Integer(), nullable=False),
        sa.Column("stack", sa.String(length=63), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files_events")),
    )
    with op.batch_alter_table("model_files_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_files_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_files_events_files_id"), ["files_id"], unique=False)

    op.create_table(
        "model_files_locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("files_id", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=63), nullable=False),
        sa.Column("runtime", sa.String(length=16), nullable=False),
        sa.Column("uri", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Double(), nullable=False),
        sa.Column("eta_seconds", sa.Double(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["files_id"],
            ["model_files.id"],
            name=op.f("fk_model_files_locations_files_id_model_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_files_locations")),
        sa.UniqueConstraint("files_id", "region", name=op.f("uq_model_files_locations_files_id")),
    )
    with op.batch_alter_table("model_files_locations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_files_locations_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_files_locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_files_locations_state"))

    op.drop_table("model_files_locations")
    with op.batch_alter_table("model_files_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_files_events_files_id"))
        batch_op.drop_index(batch_op.f("ix_model_files_events_at"))

    op.drop_table("model_files_events")
    with op.batch_alter_table("model_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_files_model_id"))

    op.drop_table("model_files")
