"""The notebook entry point: `workbench.connect()`."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import workbench
from tests.helpers import live_producers
from workbench.client import Workbench
from workbench.errors import TerminalError, UnknownNameError
from workbench.events.envelope import CloudEvent
from workbench.events.topics import ADAPTER_EVENT
from workbench.settings import load_settings
from workbench.stack import Endpoints

pytestmark = pytest.mark.stack


def test_connect_binds_to_the_running_stack(stack: Endpoints) -> None:
    wb = workbench.connect()
    try:
        assert isinstance(wb, Workbench)
        assert wb.endpoints == stack
        assert wb.sql("SELECT 1 AS one").to_dicts() == [{"one": 1}]
    finally:
        wb.close()


def test_close_delivers_queued_events_and_shuts_the_producer_down(stack: Endpoints) -> None:
    def event() -> CloudEvent:
        return CloudEvent(source="/close", type=ADAPTER_EVENT)

    before = live_producers()
    with workbench.connect() as wb:
        # Parts a notebook may still hold after closing.
        producer, events = wb.producer, wb.events
        handle = events.publish(ADAPTER_EVENT, event())  # queued, not waited for
        opened = live_producers() - before
        assert len(opened) == 1
    assert handle.position()[1] >= 0  # delivered by close, not dropped
    assert not opened & live_producers()  # nothing left connected to the broker
    assert "closed" in repr(producer)
    with pytest.raises(TerminalError, match="closed"):
        events.publish(ADAPTER_EVENT, event())
    # The Workbench itself opens a new producer on its next use.
    assert wb.events.publish(ADAPTER_EVENT, event()).delivered().offset is not None
    wb.close()


def test_a_connector_handle_kept_across_close_syncs_with_the_new_producer(
    stack: Endpoints, tmp_path: Path
) -> None:
    (tmp_path / "items.csv").write_text("id,name\n1,first\n2,second\n")
    instance = f"kept-{uuid.uuid4().hex[:8]}"
    with workbench.connect() as wb:
        handle = wb.connectors.add(instance, connector="files", path=str(tmp_path))
        assert handle.adapter is not None  # opened before the close, shut down by it
        closed = wb.producer
    try:
        result = handle.sync(full=True, progress=False)
        assert (result.status, result.records_published) == ("succeeded", 2)
        for published in result.handles:
            assert published.producer is wb.producer is not closed
            assert published.delivered().offset is not None
        assert wb.connectors.runs(instance)["status"].to_list() == ["succeeded"]
    finally:
        wb.close()


def test_rich_repr_lists_components_and_their_health(workbench: Any, stack: Endpoints) -> None:
    page = workbench._repr_html_()
    for component in ("postgres", "broker", "redis"):
        assert f"<td>{component}</td>" in page
    assert page.count(">healthy</td>") == 3
    password = stack.postgres_url.split(":")[2].split("@")[0]
    assert password not in page
    assert password not in repr(workbench)


def test_status_is_a_polars_frame(workbench: Any) -> None:
    status = workbench.status()
    assert isinstance(status, pl.DataFrame)
    assert status["component"].to_list() == ["postgres", "broker", "redis"]
    assert status["healthy"].all()


def test_sql_binds_parameters_instead_of_formatting(workbench: Any) -> None:
    hostile = "x'); DROP TABLE dictamesh_schemas; --"
    frame = workbench.sql("SELECT CAST(:value AS text) AS value", {"value": hostile})
    assert frame["value"].to_list() == [hostile]
    assert "schemas" in workbench.counts()


def test_counts_cover_the_catalog_tables(workbench: Any) -> None:
    counts = workbench.counts()
    assert set(counts) == {
        "entities",
        "relationships",
        "schemas",
        "events",
        "lineage_edges",
        "cache_entries",
    }
    before = counts["schemas"]
    with workbench.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(
            text(
                "INSERT INTO dictamesh_schemas"
                " (subject, version, schema_format, definition, fingerprint)"
                " VALUES ('count-test', 1, 'JSON', '{}', 'f')"
            )
        )
    assert workbench.counts()["schemas"] == before + 1


def test_reprs_never_raise_even_when_everything_is_down(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path)
    dead = Endpoints(
        postgres_url="postgresql://u:topsecret@127.0.0.1:9/x",
        kafka_bootstrap="127.0.0.1:9",
        redis_url="redis://:topsecret@127.0.0.1:9/0",
    )
    wb = Workbench(settings, dead)
    text_repr = repr(wb)
    page = wb._repr_html_()
    assert "topsecret" not in text_repr + page
    assert page.count("unhealthy") == 3
    assert not any(r.healthy for r in wb.health())


def test_schema_change_impact_through_lineage(workbench: Any) -> None:
    import uuid

    ns = f"impact-{uuid.uuid4().hex[:8]}"
    orders, daily, board = f"{ns}/orders", f"{ns}/daily_revenue", f"{ns}/board"
    for source, target in ((orders, daily), (daily, board)):
        written = workbench.catalog.record_lineage(
            {
                "eventType": "COMPLETE",
                "eventTime": "2026-11-26T10:00:00Z",
                "run": {"runId": str(uuid.uuid4())},
                "job": {"namespace": ns, "name": f"build-{target.split('/')[-1]}"},
                "inputs": [{"namespace": ns, "name": source.split("/", 1)[1]}],
                "outputs": [{"namespace": ns, "name": target.split("/", 1)[1]}],
            }
        )
        assert written >= 1
    lineage = workbench.catalog.lineage(orders, depth=None)
    assert lineage.select("dataset", "depth").rows() == [(daily, 1), (board, 2)]
    assert workbench.catalog.lineage(board, direction="upstream", depth=1)["dataset"].to_list() == [
        daily
    ]

    v1 = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}},
        "required": ["id", "amount"],
    }
    workbench.schemas.register(orders, v1, schema_format="JSON")
    breaking = {
        "type": "object",
        "properties": {"id": {"type": "integer"}},
        "required": ["id"],
        "additionalProperties": False,
    }
    jobs = [f"{ns}/build-daily_revenue", f"{ns}/build-board"]
    # Lineage is asked by default: the subject 'ns/orders' names its dataset.
    report = workbench.schemas.check(orders, breaking)
    assert not report.compatible
    assert report.incompatibilities
    assert report.dataset == orders
    assert (report.impacted_datasets, report.impacted_jobs) == ([daily, board], jobs)
    assert report.impacted == [daily, board, *jobs]
    # The catalog's impacted_by still plugs in as a callback, with the same answer.
    custom = workbench.schemas.check(orders, breaking, downstream=workbench.catalog.impacted_by)
    assert custom.impacted == [daily, board, *jobs]

    # A Confluent-style subject names its dataset in its metadata.
    topic_subject = f"{ns}.orders-value"
    workbench.schemas.register(topic_subject, v1, metadata={"dataset": orders})
    assert workbench.schemas.check(topic_subject, breaking).impacted == [daily, board, *jobs]
    # A misspelt subject is not "compatible": it is unknown, with the close match suggested.
    with pytest.raises(UnknownNameError, match=f"Did you mean {topic_subject!r}"):
        workbench.schemas.check(f"{ns}.order-value", breaking)
    with pytest.raises(UnknownNameError, match=f"Did you mean {board!r}"):
        workbench.catalog.lineage(f"{ns}/bord")


def test_analytics_sees_what_the_writer_lands(workbench: Any, workers: Any) -> None:
    import time
    import uuid

    source_id = f"lake-{uuid.uuid4().hex[:8]}"
    workbench.catalog.register("lake", "unit", "thing", source_id, attributes={"n": 1}).wait()
    query = "SELECT version FROM lake.entity_snapshots WHERE source_id = ?"
    deadline = time.monotonic() + 60
    while workbench.analytics.sql(query, [source_id]).height == 0:
        assert time.monotonic() < deadline, "the analytics writer never landed the entity"
        time.sleep(0.2)
    assert workbench.analytics.sql(query, [source_id])["version"].to_list() == [1]
    assert "event_rates" in workbench.analytics.views()
