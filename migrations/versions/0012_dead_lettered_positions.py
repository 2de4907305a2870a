"""Dead-lettered positions: which records a consumer group sent away instead of applying.

A runner writes one row per record it dead-letters, in the transaction that stores the offsets
moving past it, so "the group's offset passed this record" and "the group applied it" can be
told apart: `PublishHandle.wait()` raises for a record that was dead-lettered, with the reason.
The records themselves stay in the dead-letter topics.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dictamesh_dead_lettered",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("kafka_partition", sa.Integer, primary_key=True),
        sa.Column("kafka_offset", sa.BigInteger, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column(
            "dead_lettered_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    )


def downgrade() -> None:
    op.drop_table("dictamesh_dead_lettered")
