"""delivery outcomes (journey, segment, delivered, acknowledged, fell back, opted out)
and the delivery rollup of the reports

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("journey", sa.String(length=100), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("segment", sa.String(length=100), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("fell_back", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_deliveries_updated_at"), ["updated_at"], unique=False)
        batch_op.create_index("ix_deliveries_created_at", ["created_at"], unique=False)
    op.create_table(
        "delivery_rollup",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("journey", sa.String(length=100), nullable=False),
        sa.Column("segment", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempted", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("fell_back", sa.Integer(), nullable=False),
        sa.Column("acknowledged", sa.Integer(), nullable=False),
        sa.Column("opted_out", sa.Integer(), nullable=False),
        sa.Column("send_hist", sa.JSON(), nullable=False),
        sa.Column("deliver_hist", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_rollup", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_rollup_day"), ["day"], unique=False)
    op.create_table(
        "delivery_rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rolled_until", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute(
        "INSERT INTO delivery_rollup_state (id, watermark, rolled_until) VALUES (1, NULL, '')"
    )


def downgrade() -> None:
    op.drop_table("delivery_rollup_state")
    with op.batch_alter_table("delivery_rollup", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_rollup_day"))
    op.drop_table("delivery_rollup")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_created_at")
        batch_op.drop_index(batch_op.f("ix_deliveries_updated_at"))
        batch_op.drop_column("opted_out_at")
        batch_op.drop_column("fell_back")
        batch_op.drop_column("acked_at")
        batch_op.drop_column("delivered_at")
        batch_op.drop_column("segment")
        batch_op.drop_column("journey")
