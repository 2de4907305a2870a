"""The analytics writer: entity events and the latest entity snapshots into DuckLake.

A sink of its own consumer group (``dictamesh.analytics-writer``) on the three entity topics.
Each batch becomes one DuckLake transaction: the events are appended to ``lake.entity_events``
and ``lake.entity_snapshots`` keeps the highest version of every entity.

DuckDB does not take part in the runner's Postgres transaction: the lake commits first and the
offsets after it, so a crash in between replays the batch. Replays are harmless because
 - an event is inserted only when no row with its CloudEvent ``(event_source, event_id)`` exists
   (an anti-join), which also drops the same event published twice; and
 - a snapshot is replaced only by a strictly higher version, so re-applying changes nothing.

A lake that cannot be reached (or a DuckLake commit conflict) is raised as
`psycopg.OperationalError`, which the runner treats as transient: it pauses, backs off and
retries the batch instead of dead-lettering it. Every `compact_every` batches the writer maintains
the lake (`lake.maintain`): it merges the small Parquet files that one commit per batch leaves,
expires the snapshots older than its `retention` (`lake.Retention`: 7 days of time travel by
default) and deletes the files no snapshot references any more once their grace (1 day) is over.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl
import psycopg

from workbench.analytics import lake
from workbench.catalog.projector import PreparedChange, parse_change
from workbench.errors import ComponentUnavailableError
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.observability import get_logger

if TYPE_CHECKING:
    import duckdb

log = get_logger(__name__)

GROUP = "dictamesh.analytics-writer"

_TIME = pl.Datetime("us", "UTC")
EVENT_SCHEMA: dict[str, Any] = {
    "event_id": pl.Utf8,
    "event_source": pl.Utf8,
    "event_type": pl.Utf8,
    "time": _TIME,
    "subject": pl.Utf8,
    "domain": pl.Utf8,
    "source_system": pl.Utf8,
    "entity_type": pl.Utf8,
    "source_id": pl.Utf8,
    "entity_id": pl.Utf8,
    "version": pl.Int64,
    "attributes": pl.Utf8,
    "topic": pl.Utf8,
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "published_at": _TIME,
    "landed_at": _TIME,
}
SNAPSHOT_SCHEMA: dict[str, Any] = {
    "entity_id": pl.Utf8,
    "domain": pl.Utf8,
    "source_system": pl.Utf8,
    "entity_type": pl.Utf8,
    "source_id": pl.Utf8,
    "display_name": pl.Utf8,
    "version": pl.Int64,
    "attributes": pl.Utf8,
    "owners": pl.List(pl.Utf8),
    "tags": pl.List(pl.Utf8),
    "is_deleted": pl.Boolean,
    "updated_at": _TIME,
    "event_id": pl.Utf8,
    "landed_at": _TIME,
    # A delete without content keeps the state the lake already has (as the catalog does).
    "keep_state": pl.Boolean,
}
_EVENT_COLUMNS = ", ".join(EVENT_SCHEMA)
_SNAPSHOT_COLUMNS = ", ".join(c for c in SNAPSHOT_SCHEMA if c != "keep_state")
_KEPT = ("domain", "display_name", "attributes", "owners", "tags")

_INSERT_EVENTS = f"""
INSERT INTO {lake.EVENTS_TABLE} ({_EVENT_COLUMNS})
SELECT {_EVENT_COLUMNS} FROM dictamesh_batch_events b
WHERE NOT EXISTS (
    SELECT 1 FROM {lake.EVENTS_TABLE} e
    WHERE e.event_source = b.event_source AND e.event_id = b.event_id
)
"""  # noqa: S608 - fixed identifiers only
_UPDATE_SNAPSHOTS = f"""
UPDATE {lake.SNAPSHOTS_TABLE} AS s SET
    {", ".join(f"{c} = CASE WHEN c.keep_state THEN s.{c} ELSE c.{c} END" for c in _KEPT)},
    version = c.version, is_deleted = c.is_deleted, updated_at = c.updated_at,
    event_id = c.event_id, landed_at = c.landed_at
FROM dictamesh_batch_snapshots c
WHERE s.entity_id = c.entity_id AND s.version < c.version
"""  # noqa: S608 - fixed identifiers only
_INSERT_SNAPSHOTS = f"""
INSERT INTO {lake.SNAPSHOTS_TABLE} ({_SNAPSHOT_COLUMNS})
SELECT {_SNAPSHOT_COLUMNS} FROM dictamesh_batch_snapshots c
WHERE NOT EXISTS (SELECT 1 FROM {lake.SNAPSHOTS_TABLE} s WHERE s.entity_id = c.entity_id)
"""  # noqa: S608 - fixed identifiers only


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS).decode()


def batch_frames(
    batch: Sequence[tuple[ConsumedEvent, PreparedChange]], landed_at: datetime | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The batch as two frames: its events (each once) and the newest state of each entity.

    The version guard runs over the batch in arrival order, as applying the events one by one
    would: an entity's row is replaced only by a higher version.
    """
    landed = landed_at or datetime.now(UTC)
    events: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    states: dict[str, dict[str, Any]] = {}
    for consumed, prepared in batch:
        event, change = consumed.event, prepared.change
        entity = str(prepared.entity)
        key = (event.source, event.id)
        if key not in seen:
            seen.add(key)
            events.append(
                {
                    "event_id": event.id,
                    "event_source": event.source,
                    "event_type": event.type,
                    "time": event.time,
                    "subject": event.subject,
                    "domain": change.domain,
                    "source_system": change.source_system,
                    "entity_type": change.entity_type,
                    "source_id": change.source_id,
                    "entity_id": entity,
                    "version": change.version,
                    "attributes": _json(change.attributes),
                    "topic": consumed.topic,
                    "kafka_partition": consumed.partition,
                    "kafka_offset": consumed.offset,
                    "published_at": consumed.timestamp,
                    "landed_at": landed,
                }
            )
        before = states.get(entity)
        if before is not None and before["version"] >= change.version:
            continue
        state = {
            "entity_id": entity,
            "domain": change.domain,
            "source_system": change.source_system,
            "entity_type": change.entity_type,
            "source_id": change.source_id,
            "display_name": change.display_name,
            "version": change.version,
            "attributes": _json(change.attributes),
            "owners": list(change.owners),
            "tags": list(change.tags),
            "is_deleted": prepared.deleted,
            "updated_at": event.time,
            "event_id": event.id,
            "landed_at": landed,
            "keep_state": False,
        }
        if prepared.deleted and not change.attributes:
            if before is not None:
                state.update({name: before[name] for name in _KEPT})
            else:
                state["keep_state"] = True
        states[entity] = state
    return (
        pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row"),
        pl.DataFrame(list(states.values()), schema=SNAPSHOT_SCHEMA, orient="row"),
    )


class AnalyticsWriter:
    """Sink of the analytics consumer group: entity events and snapshots into DuckLake.

    Constructed without arguments (as the ``dictamesh.sinks`` entry point is), it writes to the
    lake in the database the consumer runner uses, with files under the configured data path.
    """

    topics = topics.ENTITY_TOPICS

    def __init__(
        self,
        postgres_url: str | None = None,
        data_path: str | Path | None = None,
        *,
        metadata_schema: str = lake.METADATA_SCHEMA,
        group: str = GROUP,
        compact_every: int = 100,
        retention: lake.Retention | None = None,
    ) -> None:
        self.group = group
        self.postgres_url = postgres_url
        self.data_path = data_path
        self.metadata_schema = metadata_schema
        self.compact_every = compact_every
        # Default: DICTAMESH_LAKE_SNAPSHOT_RETENTION_DAYS of time travel.
        self.retention = retention if retention is not None else lake.configured_retention()
        self.batches = 0
        self._config: lake.LakeConfig | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __repr__(self) -> str:
        where = self._config.postgres.redacted() if self._config else "not opened"
        return f"AnalyticsWriter(group={self.group!r}, lake={where}, batches={self.batches})"

    def prepare(self, consumed: ConsumedEvent) -> PreparedChange:
        return parse_change(consumed)

    def apply(
        self, conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, PreparedChange]]
    ) -> None:
        """Write the batch in one DuckLake transaction, idempotently (see the module doc)."""
        if not batch:
            return
        events, snapshots = batch_frames(batch)
        duckdb = lake.import_duckdb()
        started = time.perf_counter()
        try:
            con = self._connection(conn)
            self._write(con, events, snapshots)
        except (duckdb.OperationalError, ComponentUnavailableError) as exc:
            self.close()  # a fresh connection for the retry
            message = self._config.postgres.scrub(str(exc)) if self._config else str(exc)
            raise psycopg.OperationalError(f"analytics lake unavailable: {message}") from None
        except duckdb.Error:
            self.close()
            raise
        self.batches += 1
        log.debug(
            "analytics batch landed",
            group=self.group,
            events=events.height,
            entities=snapshots.height,
            seconds=round(time.perf_counter() - started, 3),
        )
        if self.compact_every and self.batches % self.compact_every == 0:
            self.compact()

    def _write(
        self, con: duckdb.DuckDBPyConnection, events: pl.DataFrame, snapshots: pl.DataFrame
    ) -> None:
        con.register("dictamesh_batch_events", events.to_arrow())
        con.register("dictamesh_batch_snapshots", snapshots.to_arrow())
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(_INSERT_EVENTS)
                con.execute(_UPDATE_SNAPSHOTS)
                con.execute(_INSERT_SNAPSHOTS)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("dictamesh_batch_events")
            con.unregister("dictamesh_batch_snapshots")

    def compact(self) -> None:
        """Maintain the lake (`lake.maintain` with this writer's `retention`): merge small files,
        expire old snapshots, delete unreferenced files. A failure (e.g. a commit conflict with
        another writer) is logged and retried at the next interval, never fatal to the consumer.
        """
        if self._con is None:
            return
        try:
            result = lake.maintain(self._con, self.retention)
        except lake.import_duckdb().Error as exc:
            message = self._config.postgres.scrub(str(exc)) if self._config else str(exc)
            log.warning("lake maintenance skipped", error=message[:200])
            return
        log.info(
            "lake maintained",
            group=self.group,
            expired_snapshots=result.expired_snapshots,
            deleted_files=result.deleted_files,
        )

    def _connection(self, conn: psycopg.Connection[Any]) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            if self._config is None:
                target = (
                    lake.PostgresTarget.from_url(self.postgres_url)
                    if self.postgres_url
                    else lake.PostgresTarget.from_connection(conn)
                )
                self._config = lake.LakeConfig.create(target, self.data_path, self.metadata_schema)
            con = lake.open_lake(self._config, read_only=False)
            try:
                lake.ensure_tables(con)
            except BaseException:
                con.close()
                raise
            self._con = con
            log.info(
                "analytics writer attached",
                group=self.group,
                lake=self._config.postgres.redacted(),
                metadata_schema=self._config.metadata_schema,
                data_path=self._config.data_path,
            )
        return self._con

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            finally:
                self._con = None
