"""Analytical views over the lake, and `Analytics`, the read side used by notebooks and dashboards.

Views are plain DuckDB views in each connection's in-memory catalog, so a read-only connection
has them too; they read the lake's newest snapshot on every query, which is what keeps them
fresh while the writer appends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from workbench.analytics import lake
from workbench.errors import ComponentUnavailableError, SettingsError, TerminalError
from workbench.events import topics

if TYPE_CHECKING:
    import duckdb

_DELETED = topics.ENTITY_DELETED

# Only fixed identifiers are interpolated into these queries.
VIEWS: dict[str, str] = {
    # Live (not deleted) entities per day, domain and source system, from the event stream: each
    # entity counts in the domain of its highest version so far; gaps are filled up to today.
    "entities_by_domain_over_time": f"""
        WITH daily AS (
            SELECT entity_id, CAST(timezone('UTC', time) AS DATE) AS day,
                   max(version) AS version, arg_max(domain, version) AS domain,
                   any_value(source_system) AS source_system,
                   arg_max(event_type = '{_DELETED}', version) AS deleted
            FROM {lake.EVENTS_TABLE} GROUP BY entity_id, day
        ), advanced AS (
            SELECT *, max(version) OVER (
                PARTITION BY entity_id ORDER BY day
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier
            FROM daily
        ), states AS (
            SELECT day, domain, source_system, deleted,
                   lag(domain) OVER w AS previous_domain, lag(deleted) OVER w AS previous_deleted
            FROM advanced WHERE earlier IS NULL OR version > earlier
            WINDOW w AS (PARTITION BY entity_id ORDER BY day)
        ), changes AS (
            SELECT day, domain, source_system, CASE WHEN deleted THEN 0 ELSE 1 END AS delta
            FROM states
            UNION ALL
            SELECT day, previous_domain, source_system, -1 FROM states
            WHERE previous_deleted = false
        ), per_day AS (
            SELECT day, domain, source_system, sum(delta) AS net_change
            FROM changes GROUP BY ALL
        ), grid AS (
            SELECT domain, source_system, CAST(unnest(generate_series(
                CAST(min(day) AS TIMESTAMP),
                CAST(greatest(max(day), CAST(timezone('UTC', now()) AS DATE)) AS TIMESTAMP),
                INTERVAL 1 DAY)) AS DATE) AS day
            FROM per_day GROUP BY domain, source_system
        )
        SELECT g.day, g.domain, g.source_system,
               CAST(sum(coalesce(p.net_change, 0)) OVER (
                   PARTITION BY g.domain, g.source_system ORDER BY g.day) AS BIGINT)
                   AS live_entities,
               CAST(coalesce(p.net_change, 0) AS BIGINT) AS net_change
        FROM grid g LEFT JOIN per_day p USING (day, domain, source_system)
        ORDER BY g.day, g.domain, g.source_system
    """,  # noqa: S608 - fixed identifiers only
    # The current state, from the snapshots the writer keeps.
    "entities_current": f"""
        SELECT domain, source_system, entity_type,
               count(*) FILTER (WHERE NOT is_deleted) AS live_entities,
               count(*) FILTER (WHERE is_deleted) AS deleted_entities,
               max(updated_at) AS last_updated_at
        FROM {lake.SNAPSHOTS_TABLE} GROUP BY ALL ORDER BY ALL
    """,  # noqa: S608 - fixed identifiers only
    "event_rates": f"""
        SELECT date_trunc('minute', time) AS minute, event_type, count(*) AS events
        FROM {lake.EVENTS_TABLE} GROUP BY ALL ORDER BY ALL
    """,  # noqa: S608 - fixed identifiers only
    # How stale each source looks: its newest event, and how long that event took to land.
    "freshness": f"""
        SELECT source_system, entity_type, count(*) AS events,
               max(time) AS last_event_time, max(landed_at) AS last_landed_at,
               epoch(now() - max(time)) AS seconds_since_last_event,
               epoch(arg_max(landed_at, time) - max(time)) AS landing_delay_seconds
        FROM {lake.EVENTS_TABLE} GROUP BY ALL ORDER BY ALL
    """,  # noqa: S608 - fixed identifiers only
}
# Over the consumer runner's offsets in Postgres: what each group has applied, and when.
OFFSETS_TABLE = "dictamesh_consumer_offsets"
POSTGRES_VIEWS: dict[str, str] = {
    "consumer_offsets": f"""
        SELECT group_id, topic, kafka_partition, next_offset, last_event_time, updated_at,
               epoch(now() - last_event_time) AS seconds_since_last_event
        FROM {lake.POSTGRES_ALIAS}.public.{OFFSETS_TABLE} ORDER BY ALL
    """,  # noqa: S608 - fixed identifiers only
}


def create_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create (or replace) every view this connection can have; return their names."""
    for name, query in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
    names = list(VIEWS)
    has_offsets = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
        [lake.POSTGRES_ALIAS, OFFSETS_TABLE],
    ).fetchone()
    if has_offsets and has_offsets[0]:  # absent until the events migration has run
        for name, query in POSTGRES_VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {query}")
            names.append(name)
    return names


class AnalyticsQueryError(TerminalError):
    """A query the analytics engine refused."""


class Analytics:
    """SQL over the lake, answered as Polars; ``wb.analytics``.

    Read-only by default: any number of processes can hold one while the writer writes. The
    connection opens on first use and creates the lake if it does not exist yet.

    >>> analytics.sql("SELECT * FROM freshness WHERE source_system = ?", ["chatwoot"])
    """

    def __init__(
        self,
        postgres_url: str,
        data_path: str | Path | None = None,
        *,
        metadata_schema: str = lake.METADATA_SCHEMA,
        bootstrap: str | None = None,
        read_only: bool = True,
    ) -> None:
        self._config = lake.LakeConfig.create(postgres_url, data_path, metadata_schema)
        self._postgres_url = postgres_url
        self.bootstrap = bootstrap
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None
        self._views: list[str] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        try:
            state = "open" if self._con is not None else "not opened"
            return (
                f"Analytics(lake={self._config.postgres.redacted()!r}, "
                f"metadata_schema={self._config.metadata_schema!r}, "
                f"data_path={self._config.data_path!r}, read_only={self.read_only}, {state})"
            )
        except Exception:  # a repr must never raise
            return "Analytics(<unavailable>)"

    def __enter__(self) -> Analytics:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- connection ---------------------------------------------------------------------------
    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The shared DuckDB connection (use `.cursor()` per thread)."""
        with self._lock:
            if self._con is None:
                self._con = self._open()
            return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        for attempt in range(3):
            try:
                con = lake.open_lake(self._config, read_only=self.read_only)
                break
            except lake.LakeNotFoundError:
                try:
                    lake.initialise(self._config)
                except lake.LakeError:  # another process was creating it at the same moment
                    if attempt == 2:
                        raise
                    time.sleep(0.2 * (attempt + 1))
        else:
            con = lake.open_lake(self._config, read_only=self.read_only)
        try:
            wanted = {t.split(".")[1] for t in (lake.EVENTS_TABLE, lake.SNAPSHOTS_TABLE)}
            if not wanted <= set(lake.lake_tables(con)):
                if self.read_only:
                    lake.initialise(self._config)
                else:
                    lake.ensure_tables(con)
            self._views = create_views(con)
        except BaseException:
            con.close()
            raise
        return con

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                try:
                    self._con.close()
                finally:
                    self._con = None

    # -- queries ------------------------------------------------------------------------------
    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Run one statement (``?`` or ``$name`` parameters) and return its rows as Polars."""
        duckdb = lake.import_duckdb()
        cursor = self.connection.cursor()
        try:
            result = cursor.execute(query, params)
            if result.description is None:  # a statement without rows
                return pl.DataFrame()
            frame = result.pl()
            return frame if isinstance(frame, pl.DataFrame) else pl.DataFrame(frame)
        except duckdb.Error as exc:
            message = self._config.postgres.scrub(str(exc)).strip()
            if isinstance(exc, duckdb.OperationalError) and not isinstance(
                exc, duckdb.TransactionException
            ):
                self.close()  # reconnect on the next query
                raise ComponentUnavailableError(
                    f"The analytics lake did not answer: {message}",
                    remedy="check Postgres with `dictamesh status`, then retry.",
                ) from None
            raise AnalyticsQueryError(
                message, remedy=f"check the SQL; views: {', '.join(self._views or VIEWS)}."
            ) from None
        finally:
            cursor.close()

    def views(self) -> list[str]:
        """The analytical views this connection has."""
        self.connection  # noqa: B018 - opening creates them
        return list(self._views)

    def tables(self) -> list[str]:
        """The lake's tables (query them as ``lake.<name>``)."""
        cursor = self.connection.cursor()
        try:
            return lake.lake_tables(cursor)
        finally:
            cursor.close()

    def lag(self) -> pl.DataFrame:
        """Lag of every consumer group per partition, in records and seconds (asks the broker)."""
        from workbench.events.lag import consumer_lag

        if not self.bootstrap:
            raise SettingsError(
                "Analytics.lag() needs the Kafka bootstrap servers.",
                remedy="pass bootstrap=... to Analytics, or query the consumer_offsets view.",
            )
        rows = consumer_lag(self.bootstrap, self._postgres_url)
        return pl.DataFrame(
            [asdict(lag) for lag in rows],
            schema={
                "group": pl.Utf8,
                "topic": pl.Utf8,
                "partition": pl.Int64,
                "applied_offset": pl.Int64,
                "end_offset": pl.Int64,
                "lag_messages": pl.Int64,
                "lag_seconds": pl.Float64,
            },
        )
