"""The SQL connector against the embedded Postgres and against SQLite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from connectors.base.errors import ConnectorConfigError
from connectors.sql import SqlConfig, SqlConnector
from workbench.events.producer import wait_for_all

DDL = [
    "CREATE TABLE {s}customers (id integer PRIMARY KEY, name text NOT NULL, "
    "email text, updated_at timestamp NOT NULL)",
    "CREATE TABLE {s}orders (order_no integer PRIMARY KEY, customer_id integer "
    "REFERENCES {s}customers(id), total numeric(10,2), updated_at timestamp NOT NULL)",
]


def seed(engine: Engine, prefix: str = "") -> None:
    with engine.begin() as conn:
        for statement in DDL:
            conn.execute(text(statement.format(s=prefix)))
        for i in range(1, 6):
            conn.execute(
                text(f"INSERT INTO {prefix}customers VALUES (:i, :n, :e, :u)"),
                {
                    "i": i,
                    "n": f"Customer {i}",
                    "e": f"c{i}@example.com",
                    "u": f"2026-01-0{i} 10:00:00",
                },
            )
            conn.execute(
                text(f"INSERT INTO {prefix}orders VALUES (:o, :c, :t, :u)"),
                {"o": 100 + i, "c": i, "t": f"{i}9.90", "u": f"2026-02-0{i} 10:00:00"},
            )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(url)
    seed(engine)
    engine.dispose()
    return url


def test_sqlite_streams_schemas_records(sqlite_url: str) -> None:
    sql = SqlConnector(SqlConfig(url=sqlite_url), instance="shop")
    streams = {s.name: s for s in sql.streams()}
    assert set(streams) == {"customers", "orders"}
    assert streams["orders"].primary_key == "order_no"
    assert streams["orders"].cursor_field == "updated_at"
    schemas = {d.subject: d.schema for d in sql.schemas()}
    customer = schemas["sql/shop/customers"]["properties"]
    assert customer["id"]["type"] == ["integer", "null"]
    assert customer["updated_at"]["format"] == "date-time"
    orders = list(sql.read(streams["orders"]))
    assert [o["order_no"] for o in orders] == [101, 102, 103, 104, 105]
    record = sql.map_record(streams["orders"], orders[1])
    assert record.links[0].entity_type == "customers" and record.links[0].source_id == "2"
    assert record.links[0].type == "customer"
    assert record.attributes["total"] == "29.90"  # Decimal as text, never float
    later = list(sql.read(streams["orders"], cursor=record.cursor))
    assert [o["order_no"] for o in later] == [102, 103, 104, 105]
    assert "secret" not in repr(SqlConfig(url="postgresql://u:secret@h/db"))


def test_queries_and_errors(sqlite_url: str) -> None:
    sql = SqlConnector(
        SqlConfig(
            url=sqlite_url,
            tables=["customers"],
            queries={
                "big_orders": {
                    "sql": "SELECT order_no, total, updated_at FROM orders WHERE total > 30",
                    "primary_key": "order_no",
                    "updated_at": "updated_at",
                }
            },
        ),
        instance="shop",
    )
    stream = {s.name: s for s in sql.streams()}["big_orders"]
    assert [r["order_no"] for r in sql.read(stream)] == [103, 104, 105]
    assert [r["order_no"] for r in sql.read(stream, cursor="2026-02-04T10:00:00")] == [104, 105]
    from workbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'orders'"):
        SqlConnector(SqlConfig(url=sqlite_url, tables=["order"]), instance="x").streams()
    with pytest.raises(ConnectorConfigError, match="SQLAlchemy URL"):
        _ = SqlConnector(SqlConfig(url="nonsense://"), instance="x").engine


@pytest.fixture
def postgres_schema(workbench: Any) -> Iterator[str]:
    schema = f"shop_{uuid.uuid4().hex[:8]}"
    with workbench.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    seed(workbench.engine, f"{schema}.")
    yield schema
    with workbench.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.stack
def test_postgres_sync_registers_schemas_and_is_incremental(
    workbench: Any, workers: Any, postgres_schema: str
) -> None:
    instance = f"shop-{uuid.uuid4().hex[:6]}"
    url = workbench.engine.url.render_as_string(hide_password=False)
    handle = workbench.connectors.add(
        instance, connector="sql", url=url, db_schema=postgres_schema, domain="sales"
    )
    first = handle.sync(full=True, progress=False)
    assert first.records_published == 10
    wait_for_all(first.handles, timeout=60)
    assert workbench.schemas.get(f"sql/{instance}/orders").version == 1
    order = workbench.catalog.get(instance, "orders", "103")
    assert order is not None and order.domain == "sales" and order.attributes["total"] == "39.90"
    edges = workbench.catalog.relationships(instance, "orders", "103", direction="out")
    assert edges["to_entity_type"].to_list() == ["customers"]
    assert edges["target_known"].to_list() == [True]

    with workbench.engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE {postgres_schema}.customers SET email = 'new@example.com', "
                "updated_at = '2026-05-01 00:00:00' WHERE id = 2"
            )
        )
        conn.execute(text(f"DELETE FROM {postgres_schema}.orders WHERE order_no = 101"))
    second = handle.sync(progress=False)
    assert second.records_published == 1  # the changed customer; the delete needs a full sync
    third = handle.sync(full=True, progress=False)
    assert third.records_deleted == 1 and third.records_published == 1
    wait_for_all(second.handles + third.handles, timeout=60)
    assert (
        workbench.catalog.get(instance, "customers", "2").attributes["email"] == "new@example.com"
    )
    assert workbench.catalog.get(instance, "orders", "101").is_deleted
    cursors = dict(
        zip(
            handle.state()["stream"].to_list(),
            [json.loads(c) for c in handle.state()["cursor"].to_list()],
            strict=True,
        )
    )
    assert cursors["customers"].startswith("2026-05-01")
