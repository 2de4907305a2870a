"""Event log: index ``recorded_at`` (what the Event Monitor's rates read), not event type.

The Event Monitor counts the last hour's events per minute and type every few seconds, by
``recorded_at``: without an index that is a scan of the whole log each time. No query used the
``(event_type, occurred_at)`` index, which every applied event paid for.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("idx_dictamesh_event_log_type", table_name="dictamesh_event_log")
    op.create_index("idx_dictamesh_event_log_recorded", "dictamesh_event_log", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("idx_dictamesh_event_log_recorded", table_name="dictamesh_event_log")
    op.create_index(
        "idx_dictamesh_event_log_type", "dictamesh_event_log", ["event_type", "occurred_at"]
    )
