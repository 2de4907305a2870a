"""Tables (or named queries) of any SQLAlchemy database as streams of catalog entities.

Each table is a stream whose entity type is the table's name and whose key is its primary key
(or the configured one); single-column foreign keys become relationships to the referenced
table's entities; a column named like ``updated_at_column`` makes the stream incremental
(``WHERE updated_at >= :cursor ORDER BY updated_at``). Each stream's columns are registered as
a JSON Schema (``sql/<instance>/<table>``) before the sync.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import Engine, MetaData, Table, create_engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from connectors.base.capabilities import (
    Adapter,
    Capability,
    EntityRecord,
    HealthStatus,
    Link,
    SchemaDeclaration,
    Stream,
)
from connectors.base.config import ConnectorConfig
from connectors.base.errors import ConnectorConfigError, SourceUnavailableError
from connectors.base.schema import jsonable, python_json_type


class QuerySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sql: str = Field(min_length=1, description="A SELECT; its rows are the stream's records.")
    primary_key: str
    updated_at: str | None = None


class SqlConfig(ConnectorConfig):
    url: SecretStr = Field(description="SQLAlchemy URL (may carry a password: kept secret).")
    tables: list[str] | None = Field(default=None, description="Tables to sync; all if None.")
    db_schema: str | None = Field(default=None, description="Database schema of the tables.")
    queries: dict[str, QuerySpec] = Field(default_factory=dict)
    updated_at_column: str = "updated_at"
    primary_keys: dict[str, str] = Field(default_factory=dict, description="Per table overrides.")
    deleted_column: str | None = Field(default=None, description="Soft-delete flag column.")


class SqlConnector(Adapter[SqlConfig]):
    """Tables or queries of any SQLAlchemy database; schemas registered, incremental by column."""

    name = "sql"
    version = "0.1.0"
    description = "Tables or queries of any SQLAlchemy database (schemas registered)."
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.READ, Capability.BATCH})
    config_class = SqlConfig

    def __init__(self, config: SqlConfig, *, instance: str | None = None) -> None:
        super().__init__(config, instance=instance)
        self._engine: Engine | None = None
        self._tables: dict[str, Table] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            try:
                self._engine = create_engine(self.config.url.get_secret_value(), pool_pre_ping=True)
            except (SQLAlchemyError, ValueError, ImportError) as exc:
                raise ConnectorConfigError(
                    f"Connector {self.instance!r}: url is not a usable SQLAlchemy URL "
                    f"({type(exc).__name__}).",
                    remedy="use e.g. postgresql+psycopg://user@host/db or sqlite:///path.db",
                ) from None
        return self._engine

    def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        super().shutdown()

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise SourceUnavailableError(
                f"{self.instance}: the database did not answer ({type(exc).__name__})."
            ) from None

    def health(self) -> HealthStatus:
        self.check()
        return HealthStatus(True, f"{self.engine.dialect.name}")

    def table(self, name: str) -> Table:
        if name not in self._tables:
            self._tables[name] = Table(
                name, MetaData(), autoload_with=self.engine, schema=self.config.db_schema
            )
        return self._tables[name]

    def table_names(self) -> list[str]:
        available = inspect(self.engine).get_table_names(schema=self.config.db_schema)
        if self.config.tables is None:
            return sorted(available)
        missing = [t for t in self.config.tables if t not in available]
        if missing:
            from workbench.errors import UnknownNameError

            raise UnknownNameError("table", missing[0], available)
        return list(self.config.tables)

    def _key(self, table: Table) -> str:
        if table.name in self.config.primary_keys:
            return self.config.primary_keys[table.name]
        keys = [c.name for c in table.primary_key.columns]
        if len(keys) != 1:
            raise ConnectorConfigError(
                f"Table {table.name!r} has {len(keys)} primary key columns; one is needed.",
                remedy=f"set primary_keys: {{{table.name}: <column>}} in the connector config.",
            )
        return keys[0]

    def streams(self) -> list[Stream]:
        streams = []
        for name in self.table_names():
            table = self.table(name)
            cursor = self.config.updated_at_column
            streams.append(
                Stream(
                    name,
                    name,
                    self._key(table),
                    cursor if cursor in table.c else None,
                    f"table {name}",
                )
            )
        for name, query in self.config.queries.items():
            streams.append(Stream(name, name, query.primary_key, query.updated_at, "query"))
        return streams

    def schemas(self) -> list[SchemaDeclaration]:
        declared = []
        for name in self.table_names():
            properties = {}
            for column in self.table(name).columns:
                try:
                    python_type: type | None = column.type.python_type
                except NotImplementedError:
                    python_type = None
                properties[column.name] = python_json_type(python_type)
            declared.append(
                SchemaDeclaration(
                    f"sql/{self.instance}/{name}",
                    {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "title": f"{name} rows",
                        "type": "object",
                        "properties": properties,
                    },
                )
            )
        return declared

    def read(self, stream: Stream, *, cursor: Any = None) -> Iterator[dict[str, Any]]:
        try:
            if stream.name in self.config.queries:
                yield from self._read_query(self.config.queries[stream.name], cursor)
                return
            table = self.table(stream.name)
            query = select(table)
            if stream.cursor_field is not None:
                column = table.c[stream.cursor_field]
                if (
                    cursor is not None
                    and self.engine.dialect.name == "sqlite"
                    and (_python_type(column.type) in (datetime, date))
                ):
                    # SQLite keeps datetimes as text in whatever format was written; compare
                    # normalised values, not strings.
                    query = query.where(func.datetime(column) >= func.datetime(str(cursor)))
                elif cursor is not None:
                    query = query.where(column >= _typed(cursor, column.type))
                query = query.order_by(column, table.c[stream.primary_key])
            else:
                query = query.order_by(table.c[stream.primary_key])
            with self.engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=1000).execute(query)
                for row in result.mappings():
                    yield dict(row)
        except SQLAlchemyError as exc:
            raise SourceUnavailableError(
                f"{self.instance}: reading {stream.name!r} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})."
            ) from None

    def _read_query(self, query: QuerySpec, cursor: Any) -> Iterator[dict[str, Any]]:
        sql = f"SELECT * FROM ({query.sql}) AS dictamesh_q"  # noqa: S608 - the operator's own query
        params: dict[str, Any] = {}
        if query.updated_at:
            if cursor is not None:
                sql += f" WHERE dictamesh_q.{query.updated_at} >= :cursor"
                params["cursor"] = _maybe_datetime(cursor)
            sql += f" ORDER BY dictamesh_q.{query.updated_at}"
        with self.engine.connect() as conn:
            for row in conn.execute(text(sql), params).mappings():
                yield dict(row)

    def map_record(self, stream: Stream, record: dict[str, Any]) -> EntityRecord:
        links = []
        if stream.name not in self.config.queries:
            for foreign in self.table(stream.name).foreign_keys:
                value = record.get(foreign.parent.name)
                if value is not None:
                    label = foreign.parent.name.removesuffix("_id") or foreign.parent.name
                    links.append(Link(label, foreign.column.table.name, str(value)))
        deleted = (
            bool(record.get(self.config.deleted_column)) if self.config.deleted_column else False
        )
        cursor = record.get(stream.cursor_field) if stream.cursor_field else None
        display = next(
            (str(record[c]) for c in ("name", "title", "display_name") if record.get(c)), None
        )
        return EntityRecord(
            stream.entity_type,
            str(record[stream.primary_key]),
            jsonable(record),
            display,
            links,
            deleted=deleted,
            cursor=jsonable(cursor),
        )


def _maybe_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _python_type(column_type: Any) -> type | None:
    try:
        found: type = column_type.python_type
    except NotImplementedError:
        return None
    return found


def _typed(value: Any, column_type: Any) -> Any:
    """The committed (JSON) cursor as the column's Python type."""
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if python_type is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if python_type is date and isinstance(value, str):
        return date.fromisoformat(value)
    return value
