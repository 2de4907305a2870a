"""Entity catalog: drop the GIN index on ``attributes``, which no query reads.

No catalog query filters on attribute containment (attribute values are found through the
full-text ``search_vector`` and the search index), yet every projected entity paid for the
``jsonb_path_ops`` entries of all its attributes: about a third of the database time of
writing an entity row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("idx_dictamesh_entity_attributes", table_name="dictamesh_entity_catalog")


def downgrade() -> None:
    op.create_index(
        "idx_dictamesh_entity_attributes",
        "dictamesh_entity_catalog",
        ["attributes"],
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )
