"""Centralized configuration: keys, versions, secrets, audit, watchers, approvals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NOW = sa.text("now()")
_ACTOR_TYPES = "('user', 'service', 'api_key', 'system')"


def _ts(name: str, *, nullable: bool = False, default: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=_NOW if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "dictamesh_config_environments",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("requires_approval", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        _ts("created_at"),
    )
    op.execute(
        "INSERT INTO dictamesh_config_environments (name, description, position) VALUES "
        "('dev', 'Development', 10), ('staging', 'Staging', 20), ('prod', 'Production', 30)"
    )
    op.create_table(
        "dictamesh_config_keys",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("schema", pg.JSONB, nullable=True),
        sa.Column("kind", sa.Text, nullable=False, server_default="value"),
        sa.Column("tags", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("owners", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("kind IN ('value', 'secret', 'flag')", name="ck_dictamesh_config_kind"),
    )
    op.create_table(
        "dictamesh_config_secrets",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False, server_default="AES-256-GCM"),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("key_nonce", sa.LargeBinary, nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("master_key_id", sa.Text, nullable=False),
        _ts("created_at"),
        _ts("rewrapped_at", nullable=True, default=False),
    )
    op.create_index(
        "idx_dictamesh_config_secrets_master", "dictamesh_config_secrets", ["master_key_id"]
    )
    op.create_table(
        "dictamesh_config_versions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False, server_default=""),
        sa.Column("component", sa.Text, nullable=False, server_default=""),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("old_value", pg.JSONB, nullable=True),
        sa.Column("new_value", pg.JSONB, nullable=True),
        sa.Column("old_secret_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("new_secret_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("diff", sa.Text, nullable=False, server_default=""),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("author_type", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("rollback_of", sa.BigInteger, nullable=True),
        sa.Column("proposal_id", sa.BigInteger, nullable=True),
        sa.Column("change_set", pg.UUID(as_uuid=True), nullable=True),
        _ts("created_at"),
        sa.CheckConstraint(
            "action IN ('set', 'delete', 'rollback', 'import')", name="ck_dictamesh_config_action"
        ),
        sa.CheckConstraint(f"author_type IN {_ACTOR_TYPES}", name="ck_dictamesh_config_author"),
    )
    op.create_index(
        "idx_dictamesh_config_versions_scope",
        "dictamesh_config_versions",
        ["environment", "service", "component", "key", "id"],
    )
    op.create_index("idx_dictamesh_config_versions_key", "dictamesh_config_versions", ["key", "id"])
    op.create_index(
        "idx_dictamesh_config_versions_time", "dictamesh_config_versions", ["created_at"]
    )
    op.create_table(
        "dictamesh_config_values",
        sa.Column("environment", sa.Text, primary_key=True),
        sa.Column("service", sa.Text, primary_key=True),
        sa.Column("component", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", pg.JSONB, nullable=True),
        sa.Column(
            "secret_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("dictamesh_config_secrets.id"),
            nullable=True,
        ),
        sa.Column(
            "version_id",
            sa.BigInteger,
            sa.ForeignKey("dictamesh_config_versions.id"),
            nullable=False,
        ),
        sa.Column("updated_by", sa.Text, nullable=False),
        _ts("updated_at"),
    )
    op.create_index("idx_dictamesh_config_values_key", "dictamesh_config_values", ["key"])
    op.create_table(
        "dictamesh_config_audit",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _ts("at"),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("actor_type", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False, server_default="ok"),
        sa.Column("environment", sa.Text, nullable=True),
        sa.Column("service", sa.Text, nullable=True),
        sa.Column("component", sa.Text, nullable=True),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("version_id", sa.BigInteger, nullable=True),
        sa.Column("request_id", sa.Text, nullable=True),
        sa.Column("address", sa.Text, nullable=True),
        sa.Column("user_agent", sa.Text, nullable=True),
        sa.Column("detail", pg.JSONB, nullable=False, server_default="{}"),
        sa.CheckConstraint(f"actor_type IN {_ACTOR_TYPES}", name="ck_dictamesh_config_audit_actor"),
    )
    op.create_index("idx_dictamesh_config_audit_at", "dictamesh_config_audit", ["at"])
    op.create_index("idx_dictamesh_config_audit_key", "dictamesh_config_audit", ["key", "at"])
    # History and audit are append-only: no UPDATE or DELETE, whoever asks.
    op.execute(
        """
        CREATE FUNCTION dictamesh_config_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: rows cannot be changed or deleted', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in ("dictamesh_config_versions", "dictamesh_config_audit"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION dictamesh_config_append_only()"
        )
    op.create_table(
        "dictamesh_config_permissions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("permission", sa.Text, nullable=False),
        sa.Column("key_pattern", sa.Text, nullable=False, server_default="*"),
        sa.Column("environment_pattern", sa.Text, nullable=False, server_default="*"),
        sa.Column("granted_by", sa.Text, nullable=False),
        _ts("granted_at"),
        sa.UniqueConstraint(
            "principal",
            "permission",
            "key_pattern",
            "environment_pattern",
            name="uq_dictamesh_config_permissions",
        ),
    )
    op.create_table(
        "dictamesh_config_proposals",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("environment", sa.Text, nullable=False),
        sa.Column("service", sa.Text, nullable=False, server_default=""),
        sa.Column("component", sa.Text, nullable=False, server_default=""),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("value", pg.JSONB, nullable=True),
        sa.Column("secret_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("is_delete", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rollback_of", sa.BigInteger, nullable=True),
        sa.Column("base_version_id", sa.BigInteger, nullable=True),
        sa.Column("diff", sa.Text, nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False, server_default="proposed"),
        sa.Column("proposed_by", sa.Text, nullable=False),
        sa.Column("proposed_by_type", sa.Text, nullable=False),
        _ts("proposed_at"),
        sa.Column("reviewed_by", sa.Text, nullable=True),
        _ts("reviewed_at", nullable=True, default=False),
        sa.Column("review_comment", sa.Text, nullable=True),
        sa.Column("applied_version_id", sa.BigInteger, nullable=True),
        sa.CheckConstraint(
            "status IN ('proposed', 'approved', 'rejected', 'applied')",
            name="ck_dictamesh_config_proposal_status",
        ),
    )
    op.create_index(
        "idx_dictamesh_config_proposals_status",
        "dictamesh_config_proposals",
        ["status", "environment"],
    )
    op.create_table(
        "dictamesh_config_watchers",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("patterns", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("environment", sa.Text, nullable=True),
        sa.Column("service", sa.Text, nullable=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        _ts("started_at"),
        _ts("last_heartbeat"),
        sa.Column("last_version_id", sa.BigInteger, nullable=True),
        sa.Column("notified", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index(
        "idx_dictamesh_config_watchers_heartbeat", "dictamesh_config_watchers", ["last_heartbeat"]
    )


def downgrade() -> None:
    op.drop_table("dictamesh_config_watchers")
    op.drop_table("dictamesh_config_proposals")
    op.drop_table("dictamesh_config_permissions")
    for table in ("dictamesh_config_versions", "dictamesh_config_audit"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS dictamesh_config_append_only()")
    op.drop_table("dictamesh_config_audit")
    op.drop_table("dictamesh_config_values")
    op.drop_table("dictamesh_config_versions")
    op.drop_table("dictamesh_config_secrets")
    op.drop_table("dictamesh_config_keys")
    op.drop_table("dictamesh_config_environments")
