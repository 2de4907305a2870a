"""Migration 0003 reverts and re-applies cleanly (inside a transaction that is rolled back)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from tests.helpers import REPO

pytestmark = pytest.mark.stack
TABLES = {
    "dictamesh_config_environments",
    "dictamesh_config_keys",
    "dictamesh_config_values",
    "dictamesh_config_versions",
    "dictamesh_config_secrets",
    "dictamesh_config_audit",
    "dictamesh_config_permissions",
    "dictamesh_config_proposals",
    "dictamesh_config_watchers",
}


def _tables(connection: Any) -> set[str]:
    return set(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'dictamesh_config_%'")
        ).scalars()
    )


def test_downgrade_then_upgrade(workbench: Any) -> None:
    spec = importlib.util.spec_from_file_location(
        "migration_0003", REPO / "migrations" / "versions" / "0003_config.py"
    )
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    workbench.config.close()  # no listener holds the tables
    with workbench.engine.connect() as connection:
        transaction = connection.begin()
        try:
            assert _tables(connection) == TABLES
            with Operations.context(MigrationContext.configure(connection)):
                migration.downgrade()
                assert _tables(connection) == set()
                migration.upgrade()
            assert _tables(connection) == TABLES
            environments = connection.execute(
                text("SELECT name FROM dictamesh_config_environments ORDER BY position")
            ).scalars()
            assert list(environments) == ["dev", "staging", "prod"]
        finally:
            transaction.rollback()
