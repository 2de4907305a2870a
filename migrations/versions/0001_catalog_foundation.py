"""Catalog foundation: pgvector and the six catalog tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UUID_PK = dict(primary_key=True, server_default=sa.text("gen_random_uuid()"))
NOW = sa.text("now()")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    ]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    # Schema registry: subjects with versions, in one of the supported formats.
    op.create_table(
        "dictamesh_schemas",
        sa.Column("id", pg.UUID(as_uuid=True), **UUID_PK),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("schema_format", sa.Text, nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("compatibility", sa.Text, nullable=False, server_default="BACKWARD"),
        sa.Column("references", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("subject", "version", name="uq_dictamesh_schemas_subject_version"),
        sa.CheckConstraint("version > 0", name="ck_dictamesh_schemas_version_positive"),
        sa.CheckConstraint(
            "schema_format IN ('AVRO', 'JSON', 'PROTOBUF', 'GRAPHQL')",
            name="ck_dictamesh_schemas_format",
        ),
        sa.CheckConstraint(
            "compatibility IN ('BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', "
            "'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE', 'NONE')",
            name="ck_dictamesh_schemas_compatibility",
        ),
    )
    op.create_index(
        "idx_dictamesh_schemas_fingerprint", "dictamesh_schemas", ["subject", "fingerprint"]
    )

    # Entity catalog: one row per entity of a source system, versioned, soft-deleted.
    op.create_table(
        "dictamesh_entity_catalog",
        sa.Column("id", pg.UUID(as_uuid=True), **UUID_PK),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("source_system", sa.Text, nullable=False),
        sa.Column("entity_type", sa.Text, nullable=False),
        sa.Column("source_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column(
            "schema_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_schemas.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("display_name", sa.Text, nullable=True),
        sa.Column("attributes", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("cache_config", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("owners", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("tags", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        *_timestamps(),
        sa.Column(
            "search_vector",
            pg.TSVECTOR,
            sa.Computed(
                "setweight(to_tsvector('english'::regconfig, coalesce(display_name, '') || ' ' "
                "|| source_id || ' ' || entity_type || ' ' || domain), 'A') || "
                "setweight(jsonb_to_tsvector('english'::regconfig, attributes, '[\"string\"]'), 'B')",
                persisted=True,
            ),
        ),
        sa.UniqueConstraint(
            "source_system", "entity_type", "source_id", name="uq_dictamesh_entity_identity"
        ),
        sa.CheckConstraint("version > 0", name="ck_dictamesh_entity_version_positive"),
    )
    op.create_index(
        "idx_dictamesh_entity_domain_type", "dictamesh_entity_catalog", ["domain", "entity_type"]
    )
    op.create_index("idx_dictamesh_entity_updated", "dictamesh_entity_catalog", ["updated_at"])
    op.create_index(
        "idx_dictamesh_entity_search",
        "dictamesh_entity_catalog",
        ["search_vector"],
        postgresql_using="gin",
    )
    op.create_index(
        "idx_dictamesh_entity_tags", "dictamesh_entity_catalog", ["tags"], postgresql_using="gin"
    )
    op.create_index(
        "idx_dictamesh_entity_attributes",
        "dictamesh_entity_catalog",
        ["attributes"],
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )

    # Typed, directed relationships between catalog entities.
    op.create_table(
        "dictamesh_entity_relationships",
        sa.Column("id", pg.UUID(as_uuid=True), **UUID_PK),
        sa.Column(
            "from_entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "to_entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("relationship_type", sa.Text, nullable=False),
        sa.Column("cardinality", sa.Text, nullable=False, server_default="many_to_one"),
        sa.Column("confidence", sa.Numeric(4, 3), nullable=False, server_default="1"),
        sa.Column("metadata", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        *_timestamps(),
        sa.UniqueConstraint(
            "from_entity_id", "to_entity_id", "relationship_type", name="uq_dictamesh_relationship"
        ),
        sa.CheckConstraint(
            "cardinality IN ('one_to_one', 'one_to_many', 'many_to_one', 'many_to_many')",
            name="ck_dictamesh_relationship_cardinality",
        ),
        sa.CheckConstraint(
            "confidence BETWEEN 0 AND 1", name="ck_dictamesh_relationship_confidence"
        ),
    )
    op.create_index(
        "idx_dictamesh_relationship_from",
        "dictamesh_entity_relationships",
        ["from_entity_id", "relationship_type"],
    )
    op.create_index(
        "idx_dictamesh_relationship_to",
        "dictamesh_entity_relationships",
        ["to_entity_id", "relationship_type"],
    )

    # Immutable log of every applied change, with before/after state and trace ids.
    op.create_table(
        "dictamesh_event_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_source", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column(
            "entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("entity_version", sa.BigInteger, nullable=True),
        sa.Column("before_state", pg.JSONB, nullable=True),
        sa.Column("after_state", pg.JSONB, nullable=True),
        sa.Column("change_description", pg.JSONB, nullable=True),
        sa.Column("trace_id", sa.Text, nullable=True),
        sa.Column("span_id", sa.Text, nullable=True),
        sa.Column("correlation_id", sa.Text, nullable=True),
        sa.Column("causation_id", sa.Text, nullable=True),
        sa.Column("topic", sa.Text, nullable=True),
        sa.Column("kafka_partition", sa.Integer, nullable=True),
        sa.Column("kafka_offset", sa.BigInteger, nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("event_source", "event_id", name="uq_dictamesh_event_log_event"),
    )
    op.create_index(
        "idx_dictamesh_event_log_entity", "dictamesh_event_log", ["entity_id", "entity_version"]
    )
    op.create_index("idx_dictamesh_event_log_occurred", "dictamesh_event_log", ["occurred_at"])
    op.create_index(
        "idx_dictamesh_event_log_type", "dictamesh_event_log", ["event_type", "occurred_at"]
    )
    op.execute(
        """
        CREATE FUNCTION dictamesh_forbid_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'restrict_violation',
                      HINT = 'append a new event instead of changing history';
        END;
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER dictamesh_event_log_immutable BEFORE UPDATE OR DELETE ON dictamesh_event_log "
        "FOR EACH ROW EXECUTE FUNCTION dictamesh_forbid_mutation()"
    )

    # Lineage edges between datasets (catalog entities or named datasets), per job run.
    op.create_table(
        "dictamesh_data_lineage",
        sa.Column("id", pg.UUID(as_uuid=True), **UUID_PK),
        sa.Column("source_dataset", sa.Text, nullable=False),
        sa.Column("target_dataset", sa.Text, nullable=False),
        sa.Column(
            "source_entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column(
            "target_entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("source_field", sa.Text, nullable=True),
        sa.Column("target_field", sa.Text, nullable=True),
        sa.Column("transformation_type", sa.Text, nullable=True),
        sa.Column(
            "transformation", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("job_name", sa.Text, nullable=True),
        sa.Column("run_id", sa.Text, nullable=True),
        sa.Column("run_state", sa.Text, nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_index(
        "idx_dictamesh_lineage_source", "dictamesh_data_lineage", ["source_dataset", "source_field"]
    )
    op.create_index(
        "idx_dictamesh_lineage_target", "dictamesh_data_lineage", ["target_dataset", "target_field"]
    )
    op.create_index("idx_dictamesh_lineage_run", "dictamesh_data_lineage", ["run_id"])
    op.create_index(
        "uq_dictamesh_lineage_edge",
        "dictamesh_data_lineage",
        [
            "source_dataset",
            "target_dataset",
            sa.text("coalesce(source_field, '')"),
            sa.text("coalesce(target_field, '')"),
            sa.text("coalesce(job_name, '')"),
        ],
        unique=True,
    )

    # Freshness, TTL and invalidations of cached views of catalog entities.
    op.create_table(
        "dictamesh_cache_status",
        sa.Column("cache_key", sa.Text, primary_key=True),
        sa.Column(
            "entity_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_entity_catalog.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("cache_layer", sa.Text, nullable=False, server_default="L2"),
        sa.Column("last_refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ttl_seconds", sa.Integer, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_stale", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("invalidation_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_invalidation_reason", sa.Text, nullable=True),
        sa.Column("source_version", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.CheckConstraint(
            "cache_layer IN ('L1', 'L2', 'L3')", name="ck_dictamesh_cache_status_layer"
        ),
        sa.CheckConstraint(
            "ttl_seconds IS NULL OR ttl_seconds >= 0", name="ck_dictamesh_cache_status_ttl"
        ),
    )
    op.create_index("idx_dictamesh_cache_status_entity", "dictamesh_cache_status", ["entity_id"])
    op.create_index("idx_dictamesh_cache_status_expires", "dictamesh_cache_status", ["expires_at"])


def downgrade() -> None:
    op.drop_table("dictamesh_cache_status")
    op.drop_table("dictamesh_data_lineage")
    op.execute("DROP TRIGGER IF EXISTS dictamesh_event_log_immutable ON dictamesh_event_log")
    op.drop_table("dictamesh_event_log")
    op.execute("DROP FUNCTION IF EXISTS dictamesh_forbid_mutation()")
    op.drop_table("dictamesh_entity_relationships")
    op.drop_table("dictamesh_entity_catalog")
    op.drop_table("dictamesh_schemas")
    op.execute("DROP EXTENSION IF EXISTS vector")
