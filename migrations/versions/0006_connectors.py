"""Connectors: sync state, persisted cursors and sync runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per sync attempt; a killed or failed run is resumed (same id) by the next sync.
    op.execute(
        """
        CREATE TABLE dictamesh_connector_runs (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            instance text NOT NULL,
            connector text NOT NULL,
            mode text NOT NULL CHECK (mode IN ('full', 'incremental')),
            status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
            attempts integer NOT NULL DEFAULT 1,
            streams_done text[] NOT NULL DEFAULT '{}',
            records_read bigint NOT NULL DEFAULT 0,
            records_published bigint NOT NULL DEFAULT 0,
            records_deleted bigint NOT NULL DEFAULT 0,
            error text,
            error_kind text,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_connector_runs_instance "
        "ON dictamesh_connector_runs (instance, started_at DESC)"
    )
    # The committed cursor of each stream; `full_cursor` is where an interrupted full run resumes.
    op.execute(
        """
        CREATE TABLE dictamesh_connector_state (
            instance text NOT NULL,
            stream text NOT NULL,
            cursor jsonb,
            full_cursor jsonb,
            full_run_id uuid,
            last_run_id uuid,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (instance, stream)
        )
        """
    )
    # What each instance last published per entity: dedup by content, versions, deletions.
    op.execute(
        """
        CREATE TABLE dictamesh_connector_records (
            instance text NOT NULL,
            entity_type text NOT NULL,
            source_id text NOT NULL,
            stream text NOT NULL,
            content_hash text NOT NULL,
            version bigint NOT NULL,
            last_change jsonb NOT NULL,
            last_seen_run uuid,
            is_deleted boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (instance, entity_type, source_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_dictamesh_connector_records_stream "
        "ON dictamesh_connector_records (instance, stream, last_seen_run)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS dictamesh_connector_records")
    op.execute("DROP TABLE IF EXISTS dictamesh_connector_state")
    op.execute("DROP TABLE IF EXISTS dictamesh_connector_runs")
