"""Retired lineage edges: a job's latest completed run defines its current edges.

``dictamesh_data_lineage.retired_at`` is NULL for a current edge and, for an edge a job stopped
using, the time of the first COMPLETE run of its job after the edge was last seen. Retired edges
stay for history; walks skip them unless asked for history. ``dictamesh_lineage_job_runs`` keeps
the completion time of each completed run, so events arriving out of order still agree on when an
edge stopped. Partial indexes over current table-level edges serve the up- and downstream walks
(index-only where the visibility map allows); the job index serves retiring a job's edges.

Existing data is backfilled: completed runs from the run history kept on the edges, and the edges
those runs superseded are retired.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The newest time an edge was seen by a run that did not fail (see workbench.catalog.lineage).
_LAST_SEEN = """greatest(e.created_at, (
    SELECT max((r->>'event_time')::timestamptz)
    FROM jsonb_array_elements(coalesce(e.transformation->'runs', '[]'::jsonb)) AS r
    WHERE coalesce(r->>'state', '') NOT IN ('FAIL', 'ABORT')))"""

_TABLE_EDGE = "retired_at IS NULL AND source_field IS NULL AND target_field IS NULL"


def upgrade() -> None:
    op.add_column(
        "dictamesh_data_lineage",
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "dictamesh_lineage_job_runs",
        sa.Column("job_name", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "idx_dictamesh_lineage_job_runs_completed",
        "dictamesh_lineage_job_runs",
        ["job_name", "completed_at"],
    )
    op.create_index("idx_dictamesh_lineage_job", "dictamesh_data_lineage", ["job_name"])
    op.create_index(
        "idx_dictamesh_lineage_current_down",
        "dictamesh_data_lineage",
        ["source_dataset"],
        postgresql_include=["target_dataset"],
        postgresql_where=sa.text(_TABLE_EDGE),
    )
    op.create_index(
        "idx_dictamesh_lineage_current_up",
        "dictamesh_data_lineage",
        ["target_dataset"],
        postgresql_include=["source_dataset"],
        postgresql_where=sa.text(_TABLE_EDGE),
    )
    op.execute(
        """
        INSERT INTO dictamesh_lineage_job_runs (job_name, run_id, completed_at)
        SELECT e.job_name, r->>'run_id', max((r->>'event_time')::timestamptz)
        FROM dictamesh_data_lineage e,
             jsonb_array_elements(coalesce(e.transformation->'runs', '[]'::jsonb)) AS r
        WHERE e.job_name IS NOT NULL AND r->>'state' = 'COMPLETE' AND r->>'run_id' IS NOT NULL
        GROUP BY e.job_name, r->>'run_id'
        """
    )
    op.execute(
        f"""
        UPDATE dictamesh_data_lineage AS target SET retired_at = superseded.at
        FROM (
            SELECT e.id, (
                SELECT min(j.completed_at) FROM dictamesh_lineage_job_runs j
                WHERE j.job_name = e.job_name AND j.completed_at > {_LAST_SEEN}
            ) AS at
            FROM dictamesh_data_lineage e
            WHERE e.job_name IS NOT NULL AND e.run_id IS NOT NULL
        ) AS superseded
        WHERE target.id = superseded.id AND superseded.at IS NOT NULL
        """  # noqa: S608 - constant SQL
    )


def downgrade() -> None:
    op.drop_index("idx_dictamesh_lineage_current_up", table_name="dictamesh_data_lineage")
    op.drop_index("idx_dictamesh_lineage_current_down", table_name="dictamesh_data_lineage")
    op.drop_index("idx_dictamesh_lineage_job", table_name="dictamesh_data_lineage")
    op.drop_table("dictamesh_lineage_job_runs")
    op.drop_column("dictamesh_data_lineage", "retired_at")
