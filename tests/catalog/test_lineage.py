"""Lineage: OpenLineage run events and native edges, queried up and downstream."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.helpers import read_records
from workbench.catalog.lineage import (
    GROUP,
    MAX_RUNS,
    Impact,
    LineageError,
    LineageNode,
    LineageSink,
    NativeEdge,
    RunEvent,
    add_edge,
    downstream,
    impact,
    impacted_by,
    ingest_run_event,
    lineage_frame,
    upstream,
)
from workbench.errors import UnknownNameError
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent, ConsumerRunner, RunnerConfig
from workbench.events.envelope import CloudEvent, InvalidEventError
from workbench.events.producer import EventProducer

pytestmark = pytest.mark.stack

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
ROW = (
    "SELECT source_dataset, target_dataset, source_field, target_field, job_name, "
    "transformation_type, transformation, run_id, run_state, event_time, created_at, retired_at "
    "FROM dictamesh_data_lineage WHERE source_dataset LIKE %s OR target_dataset LIKE %s "
    "ORDER BY source_dataset, target_dataset, source_field NULLS FIRST, "
    "target_field NULLS FIRST, job_name NULLS FIRST"
)


@pytest.fixture
def conn(workbench: Any) -> Iterator[psycopg.Connection[Any]]:
    """One transaction per test, rolled back: the database is shared."""
    with psycopg.connect(workbench.endpoints.postgres_url) as connection:
        yield connection
        connection.rollback()


@pytest.fixture
def ns() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _rows(conn: psycopg.Connection[Any], ns: str) -> list[tuple[Any, ...]]:
    return conn.execute(ROW, (f"{ns}%", f"{ns}%")).fetchall()


def _dataset(
    ns: str,
    name: str,
    columns: dict[str, list[tuple[str, str, str]]] | None = None,
    filters: Sequence[tuple[str, str]] = (),
) -> Any:
    """An OpenLineage dataset; `filters` are (dataset, field) inputs of the whole output."""
    dataset: dict[str, Any] = {"namespace": ns, "name": name}
    if columns is not None:
        dataset["facets"] = {
            "columnLineage": {
                "_producer": "https://example.test",
                "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json",
                "fields": {
                    column: {
                        "inputFields": [
                            {
                                "namespace": ns,
                                "name": source,
                                "field": field,
                                "transformations": [{"type": "DIRECT", "subtype": subtype}],
                            }
                            for source, field, subtype in inputs
                        ]
                    }
                    for column, inputs in columns.items()
                },
                "dataset": [
                    {
                        "namespace": ns,
                        "name": source,
                        "field": field,
                        "transformations": [{"type": "INDIRECT", "subtype": "FILTER"}],
                    }
                    for source, field in filters
                ],
            },
            "schema": {"fields": [{"name": column, "type": "DECIMAL"} for column in columns]},
        }
    return dataset


def _event(
    ns: str,
    state: str,
    run: str,
    *,
    inputs: Sequence[str] = (),
    outputs: Sequence[Any] = (),
    at: datetime = T0,
    job: str = "daily_report",
) -> dict[str, Any]:
    return {
        "eventType": state,
        "eventTime": at.isoformat(),
        "run": {"runId": run, "facets": {}},
        "job": {"namespace": ns, "name": job},
        "inputs": [_dataset(ns, name) for name in inputs],
        "outputs": [o if isinstance(o, dict) else _dataset(ns, o) for o in outputs],
        "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.0.0/client/python",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "someVendorKey": {"kept": True},
    }


def _report(ns: str) -> dict[str, Any]:
    """The report's columns: total from orders.amount and rates.rate, name from customers."""
    return _dataset(
        ns,
        "report",
        {
            "total": [("orders", "amount", "AGGREGATION"), ("rates", "rate", "TRANSFORMATION")],
            "name": [("customers", "name", "IDENTITY")],
        },
    )


def _start_and_complete(conn: psycopg.Connection[Any], ns: str, run: str) -> tuple[int, int]:
    started = ingest_run_event(
        conn, _event(ns, "START", run, inputs=["orders", "customers"], outputs=["report"])
    )
    completed = ingest_run_event(
        conn,
        _event(
            ns,
            "COMPLETE",
            run,
            inputs=["orders", "customers"],
            outputs=[_report(ns)],
            at=T0 + timedelta(minutes=5),
        ),
    )
    return started, completed


def _nodes(nodes: list[LineageNode], ns: str) -> list[tuple[str, str | None, int]]:
    return [(n.dataset.removeprefix(f"{ns}/"), n.field, n.depth) for n in nodes]


# -- ingestion ---------------------------------------------------------------------------------


def test_start_then_complete_writes_table_and_column_edges(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    run = str(uuid.uuid4())
    started, completed = _start_and_complete(conn, ns, run)
    assert started == 2
    # Both table edges move to COMPLETE, rates->report is implied by a column, plus 3 column edges.
    assert completed == 6
    rows = _rows(conn, ns)
    job = f"{ns}/daily_report"
    edges = {(r[0], r[1], r[2], r[3]): r for r in rows}
    assert set(edges) == {
        (f"{ns}/customers", f"{ns}/report", None, None),
        (f"{ns}/orders", f"{ns}/report", None, None),
        (f"{ns}/rates", f"{ns}/report", None, None),
        (f"{ns}/customers", f"{ns}/report", "name", "name"),
        (f"{ns}/orders", f"{ns}/report", "amount", "total"),
        (f"{ns}/rates", f"{ns}/report", "rate", "total"),
    }
    assert {r[4] for r in rows} == {job}
    assert {(r[7], r[8], r[9]) for r in rows} == {(run, "COMPLETE", T0 + timedelta(minutes=5))}
    table = edges[(f"{ns}/orders", f"{ns}/report", None, None)]
    assert table[5] == "job"
    assert table[6]["job"] == {"namespace": ns, "name": "daily_report"}
    assert table[6]["runs"] == [
        {"run_id": run, "state": "COMPLETE", "event_time": (T0 + timedelta(minutes=5)).isoformat()}
    ]
    assert table[10] == T0, "first seen at the START"
    column = edges[(f"{ns}/orders", f"{ns}/report", "amount", "total")]
    assert column[5] == "AGGREGATION"
    assert column[6]["transformations"] == [{"type": "DIRECT", "subtype": "AGGREGATION"}]
    assert edges[(f"{ns}/customers", f"{ns}/report", "name", "name")][5] == "IDENTITY"


def test_fail_and_abort_record_the_run_state_without_creating_edges(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    failed = _event(ns, "FAIL", first, inputs=["a"], outputs=["b"])
    assert ingest_run_event(conn, failed) == 0
    assert _rows(conn, ns) == []

    assert ingest_run_event(conn, _event(ns, "START", second, inputs=["a"], outputs=["b"])) == 1
    # A FAIL naming no datasets still reaches the edges its run's START wrote.
    later = T0 + timedelta(minutes=1)
    assert ingest_run_event(conn, _event(ns, "FAIL", second, at=later)) == 1
    [edge] = _rows(conn, ns)
    assert (edge[7], edge[8], edge[9]) == (second, "FAIL", later)

    # A new run that aborts marks the edges between the datasets it names, and creates no others.
    latest = T0 + timedelta(hours=1)
    aborted = _event(ns, "ABORT", third, inputs=["a", "x"], outputs=["b", "y"], at=latest)
    assert ingest_run_event(conn, aborted) == 1
    [edge] = _rows(conn, ns)
    assert (edge[0], edge[1], edge[7], edge[8], edge[9]) == (
        f"{ns}/a",
        f"{ns}/b",
        third,
        "ABORT",
        latest,
    )
    assert [(r["run_id"], r["state"]) for r in edge[6]["runs"]] == [
        (third, "ABORT"),
        (second, "FAIL"),
    ]


def test_replays_change_nothing_and_order_does_not_matter(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    run = str(uuid.uuid4())
    _start_and_complete(conn, ns, run)
    before = _rows(conn, ns)
    assert _start_and_complete(conn, ns, run) == (0, 0)
    assert _rows(conn, ns) == before

    # The same events in the opposite order converge on the same rows.
    other = f"{ns}-reversed"
    complete = _event(
        other, "COMPLETE", run, inputs=["orders", "customers"], outputs=[_report(other)]
    )
    complete["eventTime"] = (T0 + timedelta(minutes=5)).isoformat()
    ingest_run_event(conn, complete)
    assert (
        ingest_run_event(
            conn, _event(other, "START", run, inputs=["orders", "customers"], outputs=["report"])
        )
        == 2
    ), "the START only moves created_at back"

    def renamed(rows: list[tuple[Any, ...]], prefix: str) -> list[tuple[Any, ...]]:
        out = []
        for row in rows:
            values = list(row)
            for i in (0, 1, 4):
                values[i] = values[i].replace(prefix, "NS", 1)
            values[6] = {**values[6], "job": {**values[6]["job"], "namespace": "NS"}}
            out.append(tuple(values))
        return out

    assert renamed(_rows(conn, other), other) == renamed(before, ns)


def test_newer_runs_update_the_edge_and_older_ones_do_not(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    later = T0 + timedelta(days=1)
    ingest_run_event(conn, _event(ns, "COMPLETE", old, inputs=["a"], outputs=["b"]))
    assert (
        ingest_run_event(conn, _event(ns, "RUNNING", new, inputs=["a"], outputs=["b"], at=later))
        == 1
    )
    [edge] = _rows(conn, ns)
    assert (edge[7], edge[8], edge[9]) == (new, "RUNNING", later)
    # A late START of the same newer run does not move it backwards; a late older run only joins
    # the run history.
    assert ingest_run_event(conn, _event(ns, "START", new, inputs=["a"], outputs=["b"])) == 0
    ancient = str(uuid.uuid4())
    early = T0 - timedelta(days=1)
    assert (
        ingest_run_event(
            conn, _event(ns, "COMPLETE", ancient, inputs=["a"], outputs=["b"], at=early)
        )
        == 1
    )
    [edge] = _rows(conn, ns)
    assert (edge[7], edge[8], edge[9], edge[10]) == (new, "RUNNING", later, early)
    assert [r["run_id"] for r in edge[6]["runs"]] == [new, old, ancient]
    # A RUNNING -> COMPLETE event without datasets finishes the run on the edges it wrote.
    done = later + timedelta(minutes=3)
    assert ingest_run_event(conn, _event(ns, "COMPLETE", new, at=done)) == 1
    [edge] = _rows(conn, ns)
    assert (edge[7], edge[8], edge[9]) == (new, "COMPLETE", done)


def test_native_edges(conn: psycopg.Connection[Any], ns: str) -> None:
    a, b = f"{ns}/a", f"{ns}/b"
    assert (
        add_edge(conn, a, b, source_field="id", target_field="a_id", transformation_type="copy")
        == 2
    )
    assert (
        add_edge(conn, a, b, source_field="id", target_field="a_id", transformation_type="copy")
        == 0
    )
    assert add_edge(conn, a, b, source_field="id", target_field="a_id") == 0, "None keeps the type"
    assert (
        add_edge(conn, a, b, source_field="id", target_field="a_id", transformation_type="cast")
        == 1
    )
    rows = _rows(conn, ns)
    assert [(r[2], r[3], r[5], r[7]) for r in rows] == [
        (None, None, None, None),
        ("id", "a_id", "cast", None),
    ]
    with pytest.raises(LineageError, match="two different ends"):
        add_edge(conn, a, a)
    with pytest.raises(LineageError, match="source"):
        add_edge(conn, "", b)
    with pytest.raises(LineageError, match="eventTime"):
        ingest_run_event(
            conn,
            {"eventType": "START", "run": {"runId": "r"}, "job": {"namespace": "n", "name": "j"}},
        )


# -- queries -----------------------------------------------------------------------------------


def test_upstream_and_downstream_by_depth(conn: psycopg.Connection[Any], ns: str) -> None:
    def d(name: str) -> str:
        return f"{ns}/{name}"

    for source, target in [("a", "b"), ("b", "c"), ("c", "d"), ("b", "e")]:
        add_edge(conn, d(source), d(target))
    add_edge(conn, d("a"), d("b"), job_name="second job")  # a parallel edge is listed once
    assert _nodes(downstream(conn, d("a"), depth=1), ns) == [("b", None, 1)]
    assert _nodes(downstream(conn, d("a"), depth=2), ns) == [
        ("b", None, 1),
        ("c", None, 2),
        ("e", None, 2),
    ]
    everything = downstream(conn, d("a"))
    assert _nodes(everything, ns) == [
        ("b", None, 1),
        ("c", None, 2),
        ("e", None, 2),
        ("d", None, 3),
    ]
    assert everything[-1].path == (d("a"), d("b"), d("c"), d("d"))
    assert _nodes(upstream(conn, d("d"), depth=1), ns) == [("c", None, 1)]
    assert _nodes(upstream(conn, d("d"), depth=2), ns) == [("c", None, 1), ("b", None, 2)]
    assert _nodes(upstream(conn, d("d")), ns) == [("c", None, 1), ("b", None, 2), ("a", None, 3)]
    assert downstream(conn, d("a"), depth=0) == []
    assert upstream(conn, d("a")) == []
    with pytest.raises(LineageError, match="depth"):
        downstream(conn, d("a"), depth=-1)

    frame = lineage_frame(everything)
    assert frame.columns == ["dataset", "field", "depth", "path"]
    assert frame["depth"].to_list() == [1, 2, 2, 3]
    assert frame["path"][0].to_list() == [d("a"), d("b")]


def test_cycles_terminate_and_each_node_appears_once_at_its_shortest_depth(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    def d(name: str) -> str:
        return f"{ns}/{name}"

    for source, target in [("a", "b"), ("b", "c"), ("c", "a"), ("a", "x"), ("x", "c")]:
        add_edge(conn, d(source), d(target))
    assert _nodes(downstream(conn, d("a")), ns) == [("b", None, 1), ("x", None, 1), ("c", None, 2)]
    assert _nodes(upstream(conn, d("a")), ns) == [("c", None, 1), ("b", None, 2), ("x", None, 2)]
    # Deterministic paths: c is reached through b and x at depth 2; the smaller parent wins.
    assert downstream(conn, d("a"))[-1].path == (d("a"), d("b"), d("c"))
    assert _nodes(downstream(conn, d("b")), ns) == [("c", None, 1), ("a", None, 2), ("x", None, 3)]


def test_column_level_lineage_follows_only_the_column_inputs(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    _start_and_complete(conn, ns, str(uuid.uuid4()))
    dashboard = _dataset(ns, "dashboard", {"revenue": [("report", "total", "IDENTITY")]})
    ingest_run_event(
        conn,
        _event(ns, "COMPLETE", str(uuid.uuid4()), inputs=["report"], outputs=[dashboard], job="bi"),
    )
    assert _nodes(upstream(conn, f"{ns}/report", field="total"), ns) == [
        ("orders", "amount", 1),
        ("rates", "rate", 1),
    ]
    revenue = upstream(conn, f"{ns}/dashboard", field="revenue")
    assert _nodes(revenue, ns) == [
        ("report", "total", 1),
        ("orders", "amount", 2),
        ("rates", "rate", 2),
    ]
    assert revenue[1].path == (
        f"{ns}/dashboard#revenue",
        f"{ns}/report#total",
        f"{ns}/orders#amount",
    )
    assert _nodes(upstream(conn, f"{ns}/dashboard", field="revenue", depth=1), ns) == [
        ("report", "total", 1)
    ]
    assert _nodes(downstream(conn, f"{ns}/customers", field="name"), ns) == [("report", "name", 1)]
    assert _nodes(downstream(conn, f"{ns}/orders", field="amount"), ns) == [
        ("report", "total", 1),
        ("dashboard", "revenue", 2),
    ]
    # Table level sees every input, the column-only one (rates) included.
    assert _nodes(upstream(conn, f"{ns}/dashboard"), ns) == [
        ("report", None, 1),
        ("customers", None, 2),
        ("orders", None, 2),
        ("rates", None, 2),
    ]


def test_dataset_wide_inputs_feed_every_column_of_the_output(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    # report.total sums orders.amount over the orders whose status passes a filter.
    report = _dataset(
        ns,
        "report",
        {
            "total": [("orders", "amount", "AGGREGATION")],
            "name": [("customers", "name", "IDENTITY")],
        },
        filters=[("orders", "status")],
    )
    dashboard = _dataset(ns, "dashboard", {"revenue": [("report", "total", "IDENTITY")]})
    for job, inputs, output in [
        ("daily_report", ["orders", "customers"], report),
        ("bi", ["report"], dashboard),
    ]:
        run = str(uuid.uuid4())
        ingest_run_event(
            conn, _event(ns, "COMPLETE", run, inputs=inputs, outputs=[output], job=job)
        )
    assert ("status", None, "FILTER") in {(r[2], r[3], r[5]) for r in _rows(conn, ns)}

    assert _nodes(upstream(conn, f"{ns}/report", field="total"), ns) == [
        ("orders", "amount", 1),
        ("orders", "status", 1),
    ]
    revenue = upstream(conn, f"{ns}/dashboard", field="revenue")
    assert _nodes(revenue, ns) == [
        ("report", "total", 1),
        ("orders", "amount", 2),
        ("orders", "status", 2),
    ]
    assert revenue[-1].path == (
        f"{ns}/dashboard#revenue",
        f"{ns}/report#total",
        f"{ns}/orders#status",
    )
    assert _nodes(upstream(conn, f"{ns}/dashboard", field="revenue", depth=1), ns) == [
        ("report", "total", 1)
    ]
    # The filter changes which rows the report has: the whole report and each of its columns.
    assert _nodes(downstream(conn, f"{ns}/orders", field="status"), ns) == [
        ("report", None, 1),
        ("report", "name", 1),
        ("report", "total", 1),
        ("dashboard", "revenue", 2),
    ]
    assert _nodes(downstream(conn, f"{ns}/orders", field="status", depth=1), ns) == [
        ("report", None, 1),
        ("report", "name", 1),
        ("report", "total", 1),
    ]
    assert _nodes(downstream(conn, f"{ns}/orders", field="amount"), ns) == [
        ("report", "total", 1),
        ("dashboard", "revenue", 2),
    ]


def test_column_walks_through_dataset_wide_inputs_terminate_on_cycles(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    x, y = f"{ns}/x", f"{ns}/y"
    add_edge(conn, x, y, source_field="k")  # x.k filters all of y
    add_edge(conn, y, x, source_field="c", target_field="k")
    assert _nodes(downstream(conn, x, field="k"), ns) == [("y", None, 1), ("y", "c", 1)]
    assert _nodes(upstream(conn, x, field="k"), ns) == [("y", "c", 1)]
    assert _nodes(upstream(conn, y, field="c"), ns) == [("x", "k", 1)]
    assert _nodes(downstream(conn, y, field="c"), ns) == [("x", "k", 1), ("y", None, 2)]


def test_impacted_by(conn: psycopg.Connection[Any], ns: str) -> None:
    _start_and_complete(conn, ns, str(uuid.uuid4()))
    add_edge(conn, f"{ns}/report", f"{ns}/export")
    add_edge(conn, f"{ns}/export", f"{ns}/archive", source_field="x", target_field="x")
    # The datasets, nearest first, then the jobs reading rates or them (native edges: no job).
    assert impacted_by(conn, f"{ns}/rates") == [
        f"{ns}/report",
        f"{ns}/export",
        f"{ns}/archive",
        f"{ns}/daily_report",
    ]
    assert impacted_by(conn, f"{ns}/archive") == []
    ingest_run_event(
        conn,
        _event(ns, "COMPLETE", str(uuid.uuid4()), inputs=["export"], outputs=["x"], job="sync"),
    )
    ingest_run_event(
        conn,
        _event(ns, "COMPLETE", str(uuid.uuid4()), inputs=["report"], outputs=["y"], job="board"),
    )
    assert impact(conn, f"{ns}/rates") == Impact(
        dataset=f"{ns}/rates",
        datasets=[f"{ns}/report", f"{ns}/export", f"{ns}/y", f"{ns}/archive", f"{ns}/x"],
        jobs=[f"{ns}/daily_report", f"{ns}/board", f"{ns}/sync"],
    )
    with pytest.raises(UnknownNameError, match=f"Did you mean '{ns}/rates'"):
        impacted_by(conn, f"{ns}/rate")


def test_unknown_datasets_and_columns_raise_with_close_matches(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    _start_and_complete(conn, ns, str(uuid.uuid4()))
    assert upstream(conn, f"{ns}/orders") == [], "known, with nothing upstream: no error"
    with pytest.raises(UnknownNameError) as caught:
        upstream(conn, f"{ns}/reprot")
    assert caught.value.suggestion == f"{ns}/report"
    assert f"Unknown lineage dataset '{ns}/reprot'. Did you mean '{ns}/report'?" in str(
        caught.value
    )
    with pytest.raises(UnknownNameError, match=f"Did you mean '{ns}/orders'"):
        downstream(conn, f"{ns}/ordres")
    with pytest.raises(UnknownNameError) as caught:
        upstream(conn, f"{ns}/report", field="totl")
    assert caught.value.suggestion == "total"
    with pytest.raises(UnknownNameError, match="namespace/name") as caught:
        downstream(conn, "zz-nothing-like-it-" + uuid.uuid4().hex)
    assert caught.value.suggestion is None


# -- retiring the edges a job stopped using ---------------------------------------------------


def _retired(conn: psycopg.Connection[Any], ns: str) -> dict[tuple[str, str], Any]:
    """Table edges of the namespace: (source, target) -> retired_at (None while current)."""
    return {
        (r[0].removeprefix(f"{ns}/"), r[1].removeprefix(f"{ns}/")): r[11]
        for r in _rows(conn, ns)
        if r[2] is None and r[3] is None
    }


def test_a_jobs_latest_completed_run_defines_its_current_edges(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    t1, t2, t3 = (T0 + timedelta(days=n) for n in (1, 2, 3))
    ingest_run_event(conn, _event(ns, "COMPLETE", "r0", inputs=["a"], outputs=["b"], job="j2"))
    ingest_run_event(conn, _event(ns, "COMPLETE", "r0", inputs=["z"], outputs=["b"], job="other"))
    # j2's next completed run reads a2 instead of a: a -> b stops being current, kept as history.
    assert (
        ingest_run_event(
            conn, _event(ns, "COMPLETE", "r1", inputs=["a2"], outputs=["b"], job="j2", at=t1)
        )
        == 2
    ), "a2 -> b written, a -> b retired"
    assert _nodes(upstream(conn, f"{ns}/b"), ns) == [("a2", None, 1), ("z", None, 1)]
    assert _nodes(upstream(conn, f"{ns}/b", include_history=True), ns) == [
        ("a", None, 1),
        ("a2", None, 1),
        ("z", None, 1),
    ]
    assert downstream(conn, f"{ns}/a") == [], "a is still known: no error"
    assert impacted_by(conn, f"{ns}/a") == []
    assert impacted_by(conn, f"{ns}/a", include_history=True) == [f"{ns}/b", f"{ns}/j2"]
    assert _retired(conn, ns) == {("a", "b"): t1, ("a2", "b"): None, ("z", "b"): None}

    # Replays change nothing; a FAIL proves no data flowed, so it keeps nothing current either.
    assert (
        ingest_run_event(
            conn, _event(ns, "COMPLETE", "r1", inputs=["a2"], outputs=["b"], job="j2", at=t1)
        )
        == 0
    )
    ingest_run_event(
        conn, _event(ns, "FAIL", "r2", inputs=["a", "a2"], outputs=["b"], job="j2", at=t2)
    )
    assert _retired(conn, ns) == {("a", "b"): t1, ("a2", "b"): None, ("z", "b"): None}
    # A run that starts reading a again makes it current at once; its COMPLETE confirms it.
    ingest_run_event(conn, _event(ns, "START", "r3", inputs=["a"], outputs=["b"], job="j2", at=t3))
    assert _retired(conn, ns)[("a", "b")] is None
    ingest_run_event(
        conn,
        _event(ns, "COMPLETE", "r3", job="j2", at=t3 + timedelta(minutes=1)),
    )
    assert _retired(conn, ns) == {
        ("a", "b"): None,
        ("a2", "b"): t3 + timedelta(minutes=1),
        ("z", "b"): None,
    }
    assert _nodes(upstream(conn, f"{ns}/b"), ns) == [("a", None, 1), ("z", None, 1)]


def test_an_edge_stays_current_however_many_runs_fail_after_it_was_seen(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    day = [T0 + timedelta(days=n) for n in range(12)]
    ingest_run_event(conn, _event(ns, "COMPLETE", "r0", inputs=["a"], outputs=["b"], at=day[0]))
    ingest_run_event(conn, _event(ns, "COMPLETE", "r1", inputs=["c"], outputs=["b"], at=day[1]))
    assert _retired(conn, ns)[("a", "b")] == day[1]
    ingest_run_event(conn, _event(ns, "COMPLETE", "r2", inputs=["a"], outputs=["b"], at=day[2]))
    for n in range(3, 3 + MAX_RUNS + 2):  # more failures than the runs an edge lists
        ingest_run_event(conn, _event(ns, "FAIL", f"f{n}", inputs=["a"], outputs=["b"], at=day[n]))
    # r2 read a -> b and no run completed since: current, though r2 left the newest runs.
    assert _retired(conn, ns)[("a", "b")] is None
    assert _nodes(upstream(conn, f"{ns}/b"), ns) == [("a", None, 1)]


def test_column_edges_retire_with_their_run(conn: psycopg.Connection[Any], ns: str) -> None:
    _start_and_complete(conn, ns, "r1")
    later = T0 + timedelta(days=1)
    report = _dataset(ns, "report", {"total": [("orders", "amount", "AGGREGATION")]})
    ingest_run_event(
        conn, _event(ns, "COMPLETE", "r2", inputs=["orders"], outputs=[report], at=later)
    )
    assert _nodes(upstream(conn, f"{ns}/report", field="total"), ns) == [("orders", "amount", 1)]
    assert _nodes(upstream(conn, f"{ns}/report"), ns) == [("orders", None, 1)]
    assert _nodes(upstream(conn, f"{ns}/report", field="total", include_history=True), ns) == [
        ("orders", "amount", 1),
        ("rates", "rate", 1),
    ]
    assert {(r[0], r[2], r[11]) for r in _rows(conn, ns) if r[11] is not None} == {
        (f"{ns}/customers", None, later),
        (f"{ns}/rates", None, later),
        (f"{ns}/customers", "name", later),
        (f"{ns}/rates", "rate", later),
    }


def test_retirement_converges_whatever_the_order_events_arrive_in(
    conn: psycopg.Connection[Any], ns: str
) -> None:
    t1, t2 = T0 + timedelta(days=1), T0 + timedelta(days=2)

    def events(space: str) -> list[dict[str, Any]]:
        return [
            _event(space, "COMPLETE", "r0", inputs=["a"], outputs=["b"], job="j"),
            _event(space, "COMPLETE", "r1", inputs=["a2"], outputs=["b"], job="j", at=t1),
            _event(space, "START", "r2", inputs=["a3"], outputs=["b"], job="j", at=t2),
            _event(space, "COMPLETE", "r2", job="j", at=t2 + timedelta(minutes=1)),
        ]

    def renamed(space: str) -> list[tuple[Any, ...]]:
        return [
            (r[0].removeprefix(space), r[1].removeprefix(space), r[8], r[9], r[10], r[11])
            for r in _rows(conn, space)
        ]

    expected: list[tuple[Any, ...]] | None = None
    for n, order in enumerate(itertools.permutations(range(4))):
        space = f"{ns}-{n}"
        for i in order:
            ingest_run_event(conn, events(space)[i])
        for i in order:  # replayed, in the same order
            assert ingest_run_event(conn, events(space)[i]) == 0
        if expected is None:
            expected = renamed(space)
        assert renamed(space) == expected, order
        assert _retired(conn, space) == {
            ("a", "b"): t1,
            ("a2", "b"): t2 + timedelta(minutes=1),
            ("a3", "b"): None,
        }, order


# -- the sink ----------------------------------------------------------------------------------


def _consumed(data: Any, type_: str = topics.LINEAGE) -> ConsumedEvent:
    return ConsumedEvent(
        CloudEvent(source="/tests", type=type_, data=data), topics.LINEAGE, 0, 0, None
    )


def test_sink_tells_run_events_from_native_edges_and_rejects_bad_data(ns: str) -> None:
    sink = LineageSink()
    assert (sink.group, tuple(sink.topics)) == (GROUP, (topics.LINEAGE,))
    prepared = sink.prepare(_consumed(_event(ns, "complete", "r1", inputs=["a"], outputs=["b"])))
    assert isinstance(prepared, RunEvent)
    assert prepared.event_type == "COMPLETE"
    assert prepared.model_dump(mode="json")["someVendorKey"] == {"kept": True}
    edge = sink.prepare(_consumed({"source": "a", "target": "b", "job_name": "j"}))
    assert edge == NativeEdge(source="a", target="b", job_name="j")
    for data, reason in [
        ({"eventType": "START", "run": {"runId": "r"}}, "schema-invalid"),
        (
            {
                "eventType": "BEGIN",
                "eventTime": T0.isoformat(),
                "run": {"runId": "r"},
                "job": {"namespace": "n", "name": "j"},
            },
            "schema-invalid",
        ),
        ({"source": "a"}, "schema-invalid"),
        ({"source": "a", "target": "b", "typo": 1}, "schema-invalid"),
        (["not", "an", "object"], "schema-invalid"),
    ]:
        with pytest.raises(InvalidEventError) as caught:
            sink.prepare(_consumed(data))
        assert caught.value.reason == reason, data
    with pytest.raises(InvalidEventError) as caught:
        sink.prepare(_consumed({"source": "a", "target": "b"}, type_=topics.ENTITY_CREATED))
    assert caught.value.reason == "unexpected-type"


def test_end_to_end_through_the_broker(workbench: Any, ns: str) -> None:
    endpoints = workbench.endpoints
    topics.ensure_topics(endpoints.kafka_bootstrap)
    group = f"lineage-test-{uuid.uuid4().hex[:8]}"
    runner = ConsumerRunner(
        LineageSink(group=group),
        RunnerConfig(bootstrap=endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url),
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        producer = EventProducer(endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url)
        job_key = f"{ns}/daily_report"
        run = str(uuid.uuid4())
        events = [
            _event(ns, "START", run, inputs=["orders", "customers"], outputs=["report"]),
            _event(ns, "COMPLETE", run, inputs=["orders", "customers"], outputs=[_report(ns)]),
            {"source": f"{ns}/report", "target": f"{ns}/export", "transformation_type": "copy"},
        ]
        poison = CloudEvent(
            source="/tests/lineage",
            type=topics.LINEAGE,
            partitionkey=f"{ns}-poison",
            data={"source": "x"},
        )
        handles = [
            producer.publish(
                topics.LINEAGE,
                CloudEvent(
                    source="/tests/lineage", type=topics.LINEAGE, partitionkey=job_key, data=data
                ),
            )
            for data in events
        ]
        handles.append(producer.publish(topics.LINEAGE, poison))
        for handle in handles:
            handle.delivered()
        for handle in handles[:-1]:
            handle.wait(60, group=group)

        with psycopg.connect(endpoints.postgres_url) as conn:
            assert impacted_by(conn, f"{ns}/orders") == [
                f"{ns}/report",
                f"{ns}/export",
                job_key,
            ]
            assert _nodes(upstream(conn, f"{ns}/report", field="total"), ns) == [
                ("orders", "amount", 1),
                ("rates", "rate", 1),
            ]
            states = {r[8] for r in _rows(conn, ns) if r[4] == job_key}
            assert states == {"COMPLETE"}
        [dead] = read_records(
            endpoints.kafka_bootstrap,
            topics.dead_letter_topic(topics.LINEAGE),
            # The session's own lineage projector may dead-letter it too; find ours.
            lambda m: (
                m.key() == f"{ns}-poison".encode()
                and ("dlq_consumer_group", group.encode()) in (m.headers() or [])
            ),
        )
        headers = {k: v.decode() for k, v in dead.headers() if k.startswith("dlq_")}
        assert headers["dlq_reason"] == "schema-invalid"
        assert headers["dlq_consumer_group"] == group
    finally:
        runner.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert runner.applied >= 3
    assert runner.dead_lettered >= 1
