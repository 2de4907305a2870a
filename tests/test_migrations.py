"""Migrations on the real database: round trip, naming, immutability and concurrent runs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import Engine, inspect, text

from tests.helpers import BIN
from workbench import db
from workbench.errors import UnknownNameError
from workbench.stack import Endpoints

pytestmark = pytest.mark.stack

CATALOG_TABLES = {
    "dictamesh_entity_catalog",
    "dictamesh_entity_relationships",
    "dictamesh_schemas",
    "dictamesh_event_log",
    "dictamesh_data_lineage",
    "dictamesh_cache_status",
    "dictamesh_consumer_offsets",
    "dictamesh_outbox",
}


@pytest.fixture
def scratch_database(stack: Endpoints) -> Iterator[str]:
    """An empty database of its own on the session's server; dropped afterwards."""
    name = f"scratch_{time.monotonic_ns()}"
    admin_url = stack.postgres_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield stack.postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def engine(scratch_database: str) -> Iterator[Engine]:
    engine = db.make_engine(scratch_database)
    yield engine
    engine.dispose()


def _head(engine: Engine) -> str:
    (head,) = [r.revision for r in db.migration_history(engine) if r.is_head]
    return head


def _tables(engine: Engine) -> set[str]:
    return {t for t in inspect(engine).get_table_names() if t.startswith("dictamesh_")}


def test_up_down_to_base_and_up_again_round_trips(engine: Engine) -> None:
    db.migrate_up(engine)
    assert db.current_revision(engine) == _head(engine)
    assert _tables(engine) >= CATALOG_TABLES
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT extversion FROM pg_extension WHERE extname='vector'")
        ).scalar()
    schema_after_first_up = _describe(engine)

    db.migrate_down(engine, "0001")
    assert db.current_revision(engine) == "0001"
    db.migrate_down(engine, "base")
    assert db.current_revision(engine) is None
    assert _tables(engine) <= {db.VERSION_TABLE}
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname='vector'")).scalar()
            == 0
        )

    db.migrate_up(engine)
    assert _describe(engine) == schema_after_first_up


def _describe(engine: Engine) -> dict[str, object]:
    inspector = inspect(engine)
    return {
        table: (
            sorted((c["name"], str(c["type"])) for c in inspector.get_columns(table)),
            sorted(i["name"] for i in inspector.get_indexes(table)),
        )
        for table in sorted(CATALOG_TABLES)
    }


def test_names_follow_the_conventions(engine: Engine) -> None:
    db.migrate_up(engine)
    inspector = inspect(engine)
    for table in CATALOG_TABLES:
        for index in inspector.get_indexes(table):
            assert index["name"].startswith(("idx_dictamesh_", "uq_dictamesh_")), index["name"]
    entity_columns = {c["name"] for c in inspector.get_columns("dictamesh_entity_catalog")}
    assert {
        "domain",
        "source_system",
        "entity_type",
        "source_id",
        "version",
        "schema_id",
        "attributes",
        "cache_config",
        "owners",
        "tags",
        "search_vector",
    } <= entity_columns
    relationship_columns = {
        c["name"] for c in inspector.get_columns("dictamesh_entity_relationships")
    }
    assert {
        "relationship_type",
        "from_entity_id",
        "to_entity_id",
        "cardinality",
        "confidence",
        "metadata",
    } <= relationship_columns


def test_entity_full_text_search_and_identity(engine: Engine) -> None:
    db.migrate_up(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dictamesh_entity_catalog"
                " (domain, source_system, entity_type, source_id, attributes)"
                " VALUES ('support', 'chatwoot', 'conversation', '42', CAST(:a AS jsonb))"
            ),
            {"a": '{"subject": "Refund for damaged parcel", "priority": 2}'},
        )
        found = (
            conn.execute(
                text(
                    "SELECT source_id FROM dictamesh_entity_catalog "
                    "WHERE search_vector @@ websearch_to_tsquery('english', 'damaged refunds')"
                )
            )
            .scalars()
            .all()
        )
        assert found == ["42"]
    with pytest.raises(Exception, match="uq_dictamesh_entity_identity"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dictamesh_entity_catalog"
                " (domain, source_system, entity_type, source_id)"
                " VALUES ('support', 'chatwoot', 'conversation', '42')"
            )
        )


def test_event_log_is_append_only(engine: Engine) -> None:
    db.migrate_up(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dictamesh_event_log (event_id, event_source, event_type, occurred_at)"
                " VALUES ('e1', 'test', 'dictamesh.entity.created', now())"
            )
        )
    for statement in (
        "UPDATE dictamesh_event_log SET event_type = 'x'",
        "DELETE FROM dictamesh_event_log",
    ):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT event_type FROM dictamesh_event_log")).scalar()
            == "dictamesh.entity.created"
        )


def test_unknown_revision_suggests_a_known_one(engine: Engine) -> None:
    db.migrate_up(engine)
    with pytest.raises(UnknownNameError) as caught:
        db.migrate_down(engine, "0099")
    assert "Unknown revision '0099'" in str(caught.value)
    assert "0001" in str(caught.value)


def _migrate_process(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "dictamesh"), "migrate", "up"],
        env={
            "PATH": str(BIN),
            "DICTAMESH_POSTGRES_URL": url,
            "HOME": "/tmp",
            "DICTAMESH_KAFKA_BOOTSTRAP": "127.0.0.1:9",
            "DICTAMESH_REDIS_URL": "redis://127.0.0.1:9",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _waiting_on_migration_lock(
    conn: psycopg.Connection[tuple[object, ...]], count: int, timeout: float = 60
) -> None:
    """Return once `count` sessions wait on the migration advisory lock."""
    key = db.MIGRATION_LOCK_KEY
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s",
            (key,),
        ).fetchone()
        if waiting and waiting[0] >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} migration processes never queued on the advisory lock")


def test_two_processes_migrating_at_once_are_safe(scratch_database: str) -> None:
    """Both wait on the advisory lock; released together, each revision is applied once."""
    with psycopg.connect(scratch_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (db.MIGRATION_LOCK_KEY,))
        processes = [_migrate_process(scratch_database) for _ in range(2)]
        _waiting_on_migration_lock(holder, 2)
        holder.execute("SELECT pg_advisory_unlock(%s)", (db.MIGRATION_LOCK_KEY,))
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    head = _head(db.make_engine(scratch_database))
    assert all(f"catalog schema at revision {head}" in out for out in outputs)
    with psycopg.connect(scratch_database) as conn:
        versions = conn.execute(f"SELECT version_num FROM {db.VERSION_TABLE}").fetchall()
        assert versions == [(head,)]
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'dictamesh_%%'"
            )
        }
        assert tables >= CATALOG_TABLES | {db.VERSION_TABLE}
    assert urlsplit(scratch_database).password not in "".join(outputs)
