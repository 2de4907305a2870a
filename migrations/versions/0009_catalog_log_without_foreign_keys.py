"""Catalog: the event log and the cache-status rows no longer check their entity by foreign key.

The catalog projector is the one writer of these tables: it writes an entity, its log rows and
its cache-status row in one transaction, and entities are never removed (deletes are soft). The
event log's key could only ever fire its ``ON DELETE SET NULL``, an update the log's
immutability trigger refuses, and history must outlive any entity row anyway (time travel reads
it). Each key cost an index lookup per row written, about a tenth of the projector's database
time. The indexes on ``entity_id`` stay.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("dictamesh_event_log_entity_id_fkey", "dictamesh_event_log", "foreignkey")
    op.drop_constraint(
        "dictamesh_cache_status_entity_id_fkey", "dictamesh_cache_status", "foreignkey"
    )


def downgrade() -> None:
    op.create_foreign_key(
        "dictamesh_event_log_entity_id_fkey",
        "dictamesh_event_log",
        "dictamesh_entity_catalog",
        ["entity_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        "dictamesh_cache_status_entity_id_fkey",
        "dictamesh_cache_status",
        "dictamesh_entity_catalog",
        ["entity_id"],
        ["id"],
        ondelete="CASCADE",
    )
