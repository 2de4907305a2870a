"""The analytics writer's batch planning and the lake configuration, without a stack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workbench.analytics import lake
from workbench.analytics.lake import LakeConfig, PostgresTarget
from workbench.analytics.writer import batch_frames
from workbench.catalog.model import EntityChange
from workbench.catalog.projector import PreparedChange, parse_change
from workbench.errors import MissingDependencyError, SettingsError
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import CloudEvent

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def consumed(
    source_id: str, version: int, topic: str = topics.ENTITY_UPDATED, offset: int = 0, **fields: Any
) -> tuple[ConsumedEvent, PreparedChange]:
    change = EntityChange(
        domain=fields.pop("domain", "d"),
        source_system="s",
        entity_type="e",
        source_id=source_id,
        version=version,
        **fields,
    )
    event = CloudEvent(
        source="/tests",
        type=topic,
        time=T0 + timedelta(minutes=offset),
        data=change.model_dump(mode="json", exclude_none=True),
    )
    record = ConsumedEvent(event, topic, 0, offset, T0)
    return record, parse_change(record)


def test_batch_keeps_every_event_once_and_the_newest_state() -> None:
    v1 = consumed("a", 1, topics.ENTITY_CREATED, 0, attributes={"x": 1})
    batch = [
        v1,
        v1,  # the very same event delivered twice
        consumed("a", 3, offset=1, attributes={"x": 3}),
        consumed("a", 2, offset=2, attributes={"x": 2}),  # late: joins the events only
        consumed("b", 1, topics.ENTITY_CREATED, 3, attributes={"y": 1}, tags=["t"]),
        consumed("b", 2, topics.ENTITY_DELETED, 4),  # a delete without content
    ]
    events, snapshots = batch_frames(batch)
    assert events["kafka_offset"].to_list() == [0, 1, 2, 3, 4]
    assert events["time"].dtype.time_zone == "UTC"  # type: ignore[attr-defined]
    rows = {row["source_id"]: row for row in snapshots.to_dicts()}
    assert rows["a"]["version"] == 3
    assert json.loads(rows["a"]["attributes"]) == {"x": 3}
    assert rows["b"]["is_deleted"] is True
    assert json.loads(rows["b"]["attributes"]) == {"y": 1}, "the delete keeps what b was"
    assert rows["b"]["tags"] == ["t"]
    assert rows["b"]["keep_state"] is False


def test_a_lone_delete_without_content_keeps_the_lake_state() -> None:
    _, snapshots = batch_frames([consumed("c", 4, topics.ENTITY_DELETED)])
    assert snapshots["keep_state"].to_list() == [True]


def test_postgres_urls_parse_and_never_show_the_password() -> None:
    target = PostgresTarget.from_url("postgresql+psycopg://app:s3cr%40t@db.example:6543/mesh")
    assert (target.host, target.port, target.dbname, target.user) == (
        "db.example",
        6543,
        "mesh",
        "app",
    )
    assert target.password == "s3cr@t"
    assert "s3cr" not in repr(target)
    assert target.redacted() == "postgresql://app:***@db.example:6543/mesh"
    assert target.scrub("failed for password=s3cr@t") == "failed for password=***"
    socket = PostgresTarget.from_url("postgresql://postgres@/dictamesh?host=/run/pg")
    assert (socket.host, socket.port) == ("/run/pg", 5432)
    config = LakeConfig.create(target, "/data/lake")
    assert config.data_path == "/data/lake/"
    assert "s3cr" not in repr(config)
    with pytest.raises(SettingsError, match=r"\*\*\*"):
        PostgresTarget.from_url("mysql://app:s3cr3t@db/x")
    with pytest.raises(SettingsError, match="metadata schema"):
        LakeConfig.create(target, "/data/lake", "lake; DROP")


def test_missing_extension_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    lake.extension_directory.cache_clear()
    monkeypatch.setattr(lake.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(MissingDependencyError) as caught:
            lake.extension_directory()
    finally:
        monkeypatch.undo()
        lake.extension_directory.cache_clear()
    assert "duckdb-ext-ducklake" in str(caught.value)
    assert "pip install" in str(caught.value)
    assert lake.extension_directory().name == "extensions"


def test_the_lake_retention_defaults_to_a_week_and_refuses_negative_durations() -> None:
    default = lake.Retention()
    assert default.snapshots == timedelta(days=7)
    assert default.file_grace == timedelta(days=1)
    assert lake.Retention(snapshots=timedelta(0), file_grace=timedelta(0)).snapshots == timedelta(0)
    with pytest.raises(SettingsError, match="snapshots must be a non-negative timedelta"):
        lake.Retention(snapshots=timedelta(days=-1))
    with pytest.raises(SettingsError, match="file_grace must be a non-negative timedelta"):
        lake.Retention(file_grace=3600)  # type: ignore[arg-type]


def test_the_writers_retention_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.analytics.writer import AnalyticsWriter

    monkeypatch.setenv("DICTAMESH_LAKE_SNAPSHOT_RETENTION_DAYS", "1.5")
    assert AnalyticsWriter().retention.snapshots == timedelta(days=1.5)
    monkeypatch.setenv("DICTAMESH_LAKE_SNAPSHOT_RETENTION_DAYS", "-1")
    with pytest.raises(SettingsError, match="DICTAMESH_LAKE_SNAPSHOT_RETENTION_DAYS"):
        AnalyticsWriter()
