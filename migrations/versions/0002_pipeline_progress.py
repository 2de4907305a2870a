"""Pipeline progress: consumer offsets stored with the sink, relationships to entities not yet seen.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Offsets commit in the same transaction as the rows they produced: a crash anywhere
    # neither loses a record nor applies one twice.
    op.create_table(
        "dictamesh_consumer_offsets",
        sa.Column("group_id", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("kafka_partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("last_event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
    )
    # A relationship may name an entity that arrives later; its identity is deterministic, so the
    # edge is stored at once and resolves when the target lands.
    op.drop_constraint(
        "dictamesh_entity_relationships_to_entity_id_fkey",
        "dictamesh_entity_relationships",
        type_="foreignkey",
    )
    op.add_column(
        "dictamesh_entity_relationships", sa.Column("to_source_system", sa.Text, nullable=True)
    )
    op.add_column(
        "dictamesh_entity_relationships", sa.Column("to_entity_type", sa.Text, nullable=True)
    )
    op.add_column(
        "dictamesh_entity_relationships", sa.Column("to_source_id", sa.Text, nullable=True)
    )
    op.add_column(
        "dictamesh_entity_relationships",
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    )


def downgrade() -> None:
    op.drop_column("dictamesh_entity_relationships", "version")
    op.drop_column("dictamesh_entity_relationships", "to_source_id")
    op.drop_column("dictamesh_entity_relationships", "to_entity_type")
    op.drop_column("dictamesh_entity_relationships", "to_source_system")
    op.execute(
        "DELETE FROM dictamesh_entity_relationships r WHERE NOT EXISTS "
        "(SELECT 1 FROM dictamesh_entity_catalog e WHERE e.id = r.to_entity_id)"
    )
    op.create_foreign_key(
        "dictamesh_entity_relationships_to_entity_id_fkey",
        "dictamesh_entity_relationships",
        "dictamesh_entity_catalog",
        ["to_entity_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_table("dictamesh_consumer_offsets")
