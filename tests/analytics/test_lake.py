"""The analytics lake through the real broker, Postgres and DuckLake, with concurrent readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import psycopg
import pytest

from tests.analytics.test_frames import consumed
from workbench.analytics import Analytics, AnalyticsQueryError, AnalyticsWriter, lake
from workbench.catalog.model import EntityChange
from workbench.catalog.projector import parse_change
from workbench.errors import ComponentUnavailableError
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent, ConsumerRunner, RunnerConfig
from workbench.events.envelope import CloudEvent
from workbench.stack import Endpoints

pytestmark = pytest.mark.stack


def _unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def lake_schema() -> str:
    """A lake of the test's own: its metadata schema in the session's Postgres."""
    return f"test_lake_{_unique()}"


@pytest.fixture
def writer(stack: Endpoints, tmp_path: Path, lake_schema: str) -> Iterator[AnalyticsWriter]:
    sink = AnalyticsWriter(stack.postgres_url, tmp_path / "lake", metadata_schema=lake_schema)
    yield sink
    sink.close()


@pytest.fixture
def analytics(stack: Endpoints, tmp_path: Path, lake_schema: str) -> Iterator[Analytics]:
    """A read-only reader; the first to open the lake creates it, so both name the data path."""
    reader = Analytics(
        stack.postgres_url,
        tmp_path / "lake",
        metadata_schema=lake_schema,
        bootstrap=stack.kafka_bootstrap,
    )
    yield reader
    reader.close()


@pytest.fixture
def pg(stack: Endpoints) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack.postgres_url) as conn:
        yield conn


def _wait(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _event(
    source_system: str, source_id: str, version: int, topic: str, **fields: Any
) -> CloudEvent:
    change = EntityChange(
        domain="sales",
        source_system=source_system,
        entity_type="ticket",
        source_id=source_id,
        version=version,
        **fields,
    )
    return CloudEvent(
        source="/tests/analytics",
        type=topic,
        partitionkey=change.ref.key,
        data=change.model_dump(mode="json", exclude_none=True),
    )


def test_writer_lands_events_and_snapshots_from_the_broker(
    workbench: Any, tmp_path: Path, lake_schema: str, analytics: Analytics
) -> None:
    system = f"crm-{_unique()}"
    group = f"analytics-test-{_unique()}"
    # No URL: the writer opens the lake in the database the runner's connection uses.
    sink = AnalyticsWriter(data_path=tmp_path / "lake", metadata_schema=lake_schema, group=group)
    runner = ConsumerRunner(
        sink,
        RunnerConfig(
            bootstrap=workbench.endpoints.kafka_bootstrap,
            postgres_url=workbench.endpoints.postgres_url,
        ),
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    producer = workbench.producer

    def publish(event: CloudEvent) -> None:
        producer.publish(event.type, event).delivered()

    def events_of(source_id: str) -> pl.DataFrame:
        return analytics.sql(
            "SELECT * FROM lake.entity_events WHERE source_system = ? AND source_id = ? "
            "ORDER BY time",  # publication order; offsets of different topics do not compare
            [system, source_id],
        )

    def snapshot(source_id: str) -> dict[str, Any]:
        rows = analytics.sql(
            "SELECT * FROM lake.entity_snapshots WHERE source_system = ? AND source_id = ?",
            [system, source_id],
        ).to_dicts()
        assert len(rows) <= 1
        return rows[0] if rows else {}

    try:
        publish(_event(system, "t1", 1, topics.ENTITY_CREATED, attributes={"status": "open"}))
        publish(_event(system, "t2", 1, topics.ENTITY_CREATED))
        _wait(lambda: events_of("t1").height == 1 and events_of("t2").height == 1, "v1 events")
        assert snapshot("t1")["version"] == 1
        assert json.loads(snapshot("t1")["attributes"]) == {"status": "open"}

        # Version 2 is delivered after version 3. Every version is distinct: these topics are
        # shared with the catalog projector, and two different events claiming one version
        # would make its history depend on arrival order.
        publish(_event(system, "t1", 3, topics.ENTITY_UPDATED, attributes={"status": "won"}))
        _wait(lambda: snapshot("t1").get("version") == 3, "the version-3 snapshot")
        assert json.loads(snapshot("t1")["attributes"]) == {"status": "won"}

        late = _event(system, "t1", 2, topics.ENTITY_UPDATED, attributes={"status": "quoted"})
        publish(late)
        _wait(lambda: events_of("t1").height == 3, "the late event")
        assert snapshot("t1")["version"] == 3, "an older version never replaces the snapshot"
        assert json.loads(snapshot("t1")["attributes"]) == {"status": "won"}
        publish(late)  # the same event again: no second row
        publish(_event(system, "t2", 2, topics.ENTITY_DELETED))
        _wait(lambda: snapshot("t2").get("is_deleted") is True, "the delete")
        assert events_of("t1").height == 3

        history = events_of("t1")
        assert history["version"].to_list() == [1, 3, 2]
        assert history["event_type"].to_list() == [
            topics.ENTITY_CREATED,
            topics.ENTITY_UPDATED,
            topics.ENTITY_UPDATED,
        ]
        assert history["topic"].to_list() == history["event_type"].to_list()
        assert history["published_at"].null_count() == 0
        current = analytics.sql(
            "SELECT live_entities, deleted_entities FROM entities_current WHERE source_system = ?",
            [system],
        )
        assert current.rows() == [(1, 1)]

        # Freshness and lag read the runner's offsets in Postgres and the broker.
        offsets = analytics.sql("SELECT * FROM consumer_offsets WHERE group_id = ?", [group])
        assert offsets.height > 0
        assert set(offsets["topic"]) <= set(topics.ENTITY_TOPICS)

        def caught_up() -> bool:
            lag = analytics.lag().filter(pl.col("group") == group)
            return lag.height > 0 and lag["lag_messages"].sum() == 0

        _wait(caught_up, "the writer to catch up")
        fresh = analytics.sql("SELECT * FROM freshness WHERE source_system = ?", [system])
        assert fresh["events"].to_list() == [5]
        assert fresh["seconds_since_last_event"][0] >= 0
    finally:
        runner.stop()
        thread.join(30)
        sink.close()
    assert not thread.is_alive()


def test_reapplying_a_batch_adds_nothing(
    writer: AnalyticsWriter, analytics: Analytics, pg: psycopg.Connection[Any]
) -> None:
    batch = [
        consumed("a", 1, topics.ENTITY_CREATED, 0, attributes={"n": 1}),
        consumed("b", 1, topics.ENTITY_CREATED, 1),
        consumed("a", 2, offset=2, attributes={"n": 2}),
    ]
    writer.apply(pg, batch)

    def state() -> tuple[Any, ...]:
        return (
            analytics.sql("SELECT count(*) FROM lake.entity_events").item(),
            analytics.sql(
                "SELECT string_agg(source_id || ':' || version, ',' ORDER BY source_id) "
                "FROM lake.entity_snapshots"
            ).item(),
        )

    assert state() == (3, "a:2,b:1")
    # A crash after the lake committed but before the offsets did: the runner applies the
    # batch again, inside a transaction that this time commits.
    try:
        with pg.transaction():
            writer.apply(pg, batch)
            raise RuntimeError("crash before the offsets commit")
    except RuntimeError:
        pass
    writer.apply(pg, batch)
    assert state() == (3, "a:2,b:1")
    # A replay overlapping new records lands only the new ones.
    writer.apply(pg, [*batch[1:], consumed("b", 2, offset=3), consumed("c", 1, offset=4)])
    assert state() == (5, "a:2,b:2,c:1")
    assert (
        analytics.sql(
            "SELECT count(DISTINCT (event_source, event_id)) FROM lake.entity_events"
        ).item()
        == 5
    )
    # A reopened writer (a restarted consumer) is just as idempotent.
    writer.close()
    writer.apply(pg, batch)
    assert state() == (5, "a:2,b:2,c:1")
    files = "SELECT count(*) FROM ducklake_list_files('lake', 'entity_events')"
    assert analytics.sql(files).item() > 1
    writer.compact()
    assert analytics.sql(files).item() == 1
    assert state() == (5, "a:2,b:2,c:1")


def test_an_unreachable_lake_is_a_transient_failure(
    tmp_path: Path, pg: psycopg.Connection[Any]
) -> None:
    from tests.helpers import free_port

    url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{free_port()}/dictamesh"
    sink = AnalyticsWriter(url, tmp_path / "lake", metadata_schema="unreachable")
    with pytest.raises(psycopg.OperationalError) as caught:  # the runner backs off and retries
        sink.apply(pg, [consumed("x", 1)])
    assert "pw-not-shown" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert "not opened" in repr(sink) or "***" in repr(sink)


def test_views_return_sensible_rows(
    writer: AnalyticsWriter, analytics: Analytics, pg: psycopg.Connection[Any]
) -> None:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    day = [today - timedelta(days=3 - i) for i in range(4)]

    def at(source_system: str, source_id: str, version: int, when: datetime, **kw: Any) -> Any:
        topic = kw.pop("topic", topics.ENTITY_UPDATED)
        change = EntityChange(
            domain=kw.pop("domain", "sales"),
            source_system=source_system,
            entity_type="ticket",
            source_id=source_id,
            version=version,
            **kw,
        )
        record = ConsumedEvent(
            CloudEvent(
                source="/tests",
                type=topic,
                time=when,
                data=change.model_dump(mode="json", exclude_none=True),
            ),
            topic,
            0,
            0,
            when,
        )
        return record, parse_change(record)

    created = topics.ENTITY_CREATED
    writer.apply(
        pg,
        [
            at("crm", "1", 1, day[0], topic=created),
            at("crm", "2", 1, day[0], topic=created),
            at("crm", "3", 1, day[0] + timedelta(seconds=30), topic=created),
            at("shop", "9", 1, day[1], topic=created, domain="retail"),
            at("crm", "2", 2, day[1], domain="support"),  # moves to another domain
            at("crm", "3", 2, day[2], topic=topics.ENTITY_DELETED),
            at("crm", "1", 2, day[3], attributes={"late": False}),
        ],
    )
    assert sorted(analytics.views()) == sorted(
        [
            "consumer_offsets",
            "entities_by_domain_over_time",
            "entities_current",
            "event_rates",
            "freshness",
        ]
    )
    over_time = analytics.sql(
        "SELECT day, domain, source_system, live_entities, net_change "
        "FROM entities_by_domain_over_time"
    )
    d = [when.date() for when in day]
    assert over_time.rows() == [
        (d[0], "sales", "crm", 3, 3),
        (d[1], "retail", "shop", 1, 1),
        (d[1], "sales", "crm", 2, -1),
        (d[1], "support", "crm", 1, 1),
        (d[2], "retail", "shop", 1, 0),
        (d[2], "sales", "crm", 1, -1),
        (d[2], "support", "crm", 1, 0),
        (d[3], "retail", "shop", 1, 0),
        (d[3], "sales", "crm", 1, 0),
        (d[3], "support", "crm", 1, 0),
    ]
    assert isinstance(over_time["day"][0], date)
    # The last day agrees with the snapshots.
    current = analytics.sql(
        "SELECT domain, source_system, live_entities FROM entities_current ORDER BY ALL"
    )
    assert current.rows() == [("retail", "shop", 1), ("sales", "crm", 1), ("support", "crm", 1)]

    rates = analytics.sql("SELECT minute, event_type, events FROM event_rates")
    assert rates.rows()[0] == (day[0], created, 3)
    assert rates["events"].sum() == 7
    assert rates["minute"].dtype == pl.Datetime("us", "UTC")

    fresh = analytics.sql(
        "SELECT source_system, events, last_event_time, seconds_since_last_event FROM freshness"
    )
    assert fresh["source_system"].to_list() == ["crm", "shop"]
    assert fresh["events"].to_list() == [6, 1]
    assert fresh["last_event_time"].to_list() == [day[3], day[1]]
    age = fresh["seconds_since_last_event"].to_list()
    assert abs(age[0] - (datetime.now(UTC) - day[3]).total_seconds()) < 120
    assert analytics.sql("SELECT count(*) FROM consumer_offsets").item() >= 0


def test_secrets_stay_out_of_reprs_errors_and_queries(
    stack: Endpoints, analytics: Analytics, writer: AnalyticsWriter, lake_schema: str
) -> None:
    password = psycopg.conninfo.conninfo_to_dict(stack.postgres_url)["password"]
    assert isinstance(password, str) and password
    analytics.views()
    secrets = analytics.sql("SELECT * FROM duckdb_secrets()")
    assert password not in str(secrets.to_dicts())
    assert password not in repr(analytics)
    assert password not in repr(writer)
    with pytest.raises(AnalyticsQueryError) as refused:
        analytics.sql("SET autoinstall_known_extensions = true")
    assert "locked" in str(refused.value)
    wrong = stack.postgres_url.replace(password, "not-the-password")
    bad = Analytics(wrong, metadata_schema=lake_schema)
    with pytest.raises(ComponentUnavailableError) as failed:
        bad.sql("SELECT 1")
    assert "not-the-password" not in str(failed.value)
    assert "password authentication failed" in str(failed.value)


READER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from workbench.analytics import Analytics

    url, schema = os.environ["LAKE_TEST_URL"], os.environ["LAKE_TEST_SCHEMA"]
    analytics = Analytics(url, metadata_schema=schema)
    stop = Path(os.environ["LAKE_TEST_STOP"])
    query = (
        "SELECT (SELECT count(*) FROM lake.entity_events) AS events, "
        "(SELECT coalesce(sum(events), 0) FROM event_rates) AS rated, "
        "(SELECT count(*) FROM lake.entity_snapshots) AS entities"
    )
    counts = []
    def observe():
        events, rated, entities = analytics.sql(query).row(0)
        assert events == rated, (events, rated)  # one snapshot per query
        counts.append(events)
    observe()
    print("ready", flush=True)
    while not stop.exists():
        observe()
    observe()
    ordered = all(a <= b for a, b in zip(counts, counts[1:]))
    print(json.dumps({"queries": len(counts), "last": counts[-1], "distinct": len(set(counts))}))
    sys.exit(0 if ordered else 3)
    """
)


def test_readers_in_other_processes_while_the_writer_writes(
    stack: Endpoints,
    writer: AnalyticsWriter,
    pg: psycopg.Connection[Any],
    lake_schema: str,
    tmp_path: Path,
) -> None:
    writer.apply(pg, [consumed("seed", 1, topics.ENTITY_CREATED, 0)])  # the lake exists
    # Maintenance expires every snapshot but the latest under the readers' feet; the files they
    # may still be scanning stay for the (default) grace.
    writer.retention = lake.Retention(snapshots=timedelta(0))
    stop = tmp_path / "stop"
    env = {
        **os.environ,
        "LAKE_TEST_URL": stack.postgres_url,  # not on the command line, where ps shows it
        "LAKE_TEST_SCHEMA": lake_schema,
        "LAKE_TEST_STOP": str(stop),
    }
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None
            lines = [reader.stdout.readline()]  # log lines may come first
            while lines[-1] and lines[-1].strip() != "ready":
                lines.append(reader.stdout.readline())
            if not lines[-1]:  # the reader exited before it was ready
                pytest.fail("".join(lines) + reader.communicate(timeout=30)[1][-3000:])
        offset = 1
        for batch in range(25):
            records = []
            for i in range(40):
                records.append(consumed(f"e{batch}-{i}", 1, topics.ENTITY_CREATED, offset))
                offset += 1
            writer.apply(pg, records)
            if batch in (8, 16):
                writer.compact()  # merging files, expiring snapshots under the readers' feet
        stop.touch()
        outcomes = [reader.communicate(timeout=120) for reader in readers]
    finally:
        stop.touch()
        for reader in readers:
            if reader.poll() is None:
                reader.kill()
    total = 1 + 25 * 40
    for reader, (out, err) in zip(readers, outcomes, strict=True):
        assert reader.returncode == 0, err[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["last"] == total
        assert summary["distinct"] >= 2, summary  # it saw the lake grow while it read


def test_two_writers_creating_one_lake_at_once_both_attach(
    stack: Endpoints, tmp_path: Path
) -> None:
    """The first writer and the first dashboard may both create the lake; neither may fail."""
    from workbench.analytics import lake

    target = lake.PostgresTarget.from_url(stack.postgres_url)
    failures: list[BaseException] = []

    def open_writable(config: lake.LakeConfig, start: threading.Barrier) -> None:
        start.wait()
        try:
            lake.open_lake(config, read_only=False).close()
        except BaseException as exc:
            failures.append(exc)

    for round_ in range(4):
        config = lake.LakeConfig.create(target, tmp_path / f"lake{round_}", f"race_{_unique()}")
        start = threading.Barrier(2)
        racers = [threading.Thread(target=open_writable, args=(config, start)) for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(120)
    assert failures == [], failures


def _files_on_disk(data_path: Path) -> set[str]:
    return {path.name for path in data_path.rglob("*.parquet")}


def _files_in_catalog(pg: psycopg.Connection[Any], lake_schema: str) -> set[str]:
    """Every file some remaining snapshot reads (DuckLake's ``ducklake_data_file`` and
    ``ducklake_delete_file`` catalog tables), by name: file names are unique UUIDs."""
    with pg.transaction():
        rows = pg.execute(
            f"SELECT path FROM {lake_schema}.ducklake_data_file "
            f"UNION ALL SELECT path FROM {lake_schema}.ducklake_delete_file"
        ).fetchall()
    return {Path(row[0]).name for row in rows}


def _lake_state(analytics: Analytics, at: str = "") -> tuple[Any, ...]:
    return analytics.sql(
        f"SELECT (SELECT count(*) FROM lake.entity_events {at}), "
        "(SELECT string_agg(source_id || ':' || version, ',' ORDER BY source_id) "
        f"FROM lake.entity_snapshots {at})"
    ).row(0)


def _snapshot_ids(analytics: Analytics) -> list[int]:
    rows = analytics.sql("SELECT snapshot_id FROM ducklake_snapshots('lake') ORDER BY 1")
    return [int(value) for value in rows["snapshot_id"]]


def _land_three_entities_in_two_versions(writer: AnalyticsWriter, pg: Any) -> int:
    """Six batches, each a snapshot; the updates retire whole files. Returns the next offset."""
    for n, source_id in enumerate("abc"):
        writer.apply(pg, [consumed(source_id, 1, topics.ENTITY_CREATED, 2 * n)])
        writer.apply(pg, [consumed(source_id, 2, offset=2 * n + 1)])
    return 6


@contextmanager
def _maintenance_connection(
    stack: Endpoints, data_path: Path, lake_schema: str
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = lake.open_lake(
        lake.LakeConfig.create(stack.postgres_url, data_path, lake_schema), read_only=False
    )
    try:
        yield con
    finally:
        con.close()


def test_maintenance_expires_snapshots_past_the_retention_and_deletes_their_files(
    stack: Endpoints,
    writer: AnalyticsWriter,
    analytics: Analytics,
    pg: psycopg.Connection[Any],
    lake_schema: str,
    tmp_path: Path,
) -> None:
    data_path = tmp_path / "lake"
    offset = _land_three_entities_in_two_versions(writer, pg)
    old = _snapshot_ids(analytics)
    # These batches landed a month ago: DuckLake stamps each snapshot with the catalog's clock.
    with pg.transaction():
        pg.execute(
            f"UPDATE {lake_schema}.ducklake_snapshot "
            "SET snapshot_time = snapshot_time - INTERVAL '30 days'"
        )
    month_ago = _lake_state(analytics)
    assert month_ago == (6, "a:2,b:2,c:2")
    writer.apply(pg, [consumed("d", 1, topics.ENTITY_CREATED, offset)])
    yesterday_state = _lake_state(analytics)
    writer.apply(pg, [consumed("a", 3, offset=offset + 1), consumed("d", 2, offset=offset + 2)])
    recent = [i for i in _snapshot_ids(analytics) if i not in old]
    assert len(recent) == 2
    current = _lake_state(analytics)
    assert current == (9, "a:3,b:2,c:2,d:2")
    files_before = _files_on_disk(data_path)
    assert files_before == _files_in_catalog(pg, lake_schema)

    with _maintenance_connection(stack, data_path, lake_schema) as con:
        result = lake.maintain(
            con, lake.Retention(snapshots=timedelta(days=1), file_grace=timedelta(0))
        )

    # Only the newest month-old snapshot stays: it is the lake's state all through the window.
    # (Merging files commits a snapshot of its own, after the recent ones.)
    remaining = _snapshot_ids(analytics)
    assert remaining[:3] == [old[-1], *recent]
    assert all(snapshot > recent[-1] for snapshot in remaining[3:])
    assert result.expired_snapshots == len(old) - 1
    with pytest.raises(AnalyticsQueryError, match="No snapshot found"):
        _lake_state(analytics, f"AT (VERSION => {old[-2]})")
    # The files only expired snapshots read, and those merged into bigger ones, are deleted;
    # every file left is one a remaining snapshot reads.
    files_after = _files_on_disk(data_path)
    assert files_after == _files_in_catalog(pg, lake_schema)
    assert result.deleted_files == len(files_before - files_after) > 0
    with pg.transaction():
        scheduled = pg.execute(
            f"SELECT count(*) FROM {lake_schema}.ducklake_files_scheduled_for_deletion"
        ).fetchone()
    assert scheduled == (0,)
    # The data is unchanged, and time travel inside the retention still answers.
    assert _lake_state(analytics) == current
    assert _lake_state(analytics, "AT (TIMESTAMP => now() - INTERVAL 12 HOURS)") == month_ago
    assert _lake_state(analytics, f"AT (VERSION => {old[-1]})") == month_ago
    assert _lake_state(analytics, f"AT (VERSION => {recent[0]})") == yesterday_state


def test_a_reader_inside_a_transaction_outlives_maintenance_by_the_file_grace(
    stack: Endpoints,
    writer: AnalyticsWriter,
    analytics: Analytics,
    pg: psycopg.Connection[Any],
    lake_schema: str,
    tmp_path: Path,
) -> None:
    """The reader is a DuckDB instance of its own, as a dashboard in another process is."""
    data_path = tmp_path / "lake"
    offset = _land_three_entities_in_two_versions(writer, pg)
    query = (
        "SELECT (SELECT count(*) FROM lake.entity_events), "
        "(SELECT string_agg(source_id || ':' || version, ',' ORDER BY source_id) "
        "FROM lake.entity_snapshots)"
    )
    reading = analytics.connection.cursor()
    try:
        reading.execute("BEGIN TRANSACTION")
        seen = reading.execute(query).fetchall()
        assert seen == [(6, "a:2,b:2,c:2")]
        writer.apply(pg, [consumed("a", 3, offset=offset), consumed("d", 1, offset=offset + 1)])
        with _maintenance_connection(stack, data_path, lake_schema) as con:
            # The reader's snapshot expires and its files are merged away, but none is deleted.
            kept = lake.maintain(con, lake.Retention(snapshots=timedelta(0)))
            assert kept.expired_snapshots > 0
            assert kept.deleted_files == 0
            assert reading.execute(query).fetchall() == seen
            reading.execute("COMMIT")
            assert reading.execute(query).fetchall() == [(8, "a:3,b:2,c:2,d:1")]
            # Once the grace is over (zero here), the unreferenced files go.
            gone = lake.maintain(
                con, lake.Retention(snapshots=timedelta(0), file_grace=timedelta(0))
            )
    finally:
        reading.close()
    assert gone.deleted_files > 0
    assert _files_on_disk(data_path) == _files_in_catalog(pg, lake_schema)
    assert _lake_state(analytics) == (8, "a:3,b:2,c:2,d:1")
