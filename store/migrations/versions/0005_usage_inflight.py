"""usage in flight: requests admitted and not yet recorded, and the gateway replicas' heartbeats

Revision ID: 0005
Revises: 0004 (the lead renumbers onto 0004 at merge time)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_replicas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_replicas")),
    )
    with op.batch_alter_table("gateway_replicas", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_replicas_seen_at"), ["seen_at"], unique=False)

    op.create_table(
        "usage_inflight",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("api_key", sa.String(length=16), nullable=False),
        sa.Column("workspace", sa.String(length=63), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("price_input_per_m", sa.Numeric(precision=20, scale=9), nullable=False),
        sa.Column("price_output_per_m", sa.Numeric(precision=20, scale=9), nullable=False),
        sa.Column("price_cached_per_m", sa.Numeric(precision=20, scale=9), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_inflight")),
    )
    with op.batch_alter_table("usage_inflight", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_inflight_replica"), ["replica"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_inflight", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_inflight_replica"))
    op.drop_table("usage_inflight")
    with op.batch_alter_table("gateway_replicas", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_replicas_seen_at"))
    op.drop_table("gateway_replicas")
