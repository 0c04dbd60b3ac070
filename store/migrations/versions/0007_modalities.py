"""modalities: what a MaaS model serves (capabilities, image sizes), its price per unit where tokens
are not the unit, and the modality and units of every usage row (and their sums in the rollups)

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COST = sa.Numeric(20, 9)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("maas_models", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "price_per_unit", sa.Numeric(14, 6, asdecimal=False), nullable=False, server_default="0"
            )
        )
        batch_op.add_column(sa.Column("capabilities", JSON, nullable=True))
        batch_op.add_column(sa.Column("image_sizes", JSON, nullable=True))
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("modality", sa.String(length=16), nullable=False, server_default="text")
        )
        batch_op.add_column(sa.Column("units", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("price_per_unit", COST, nullable=False, server_default="0"))

    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("units", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.drop_column("units")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("price_per_unit")
        batch_op.drop_column("units")
        batch_op.drop_column("modality")
    with op.batch_alter_table("maas_models", schema=None) as batch_op:
        batch_op.drop_column("image_sizes")
        batch_op.drop_column("capabilities")
        batch_op.drop_column("price_per_unit")
