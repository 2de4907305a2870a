"""The catalog projection through the real broker and database."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest

from tests.helpers import raw_producer, read_records
from workbench import db
from workbench.catalog.api import InvalidEntityError
from workbench.catalog.model import EntityChange, EntityRef, RelationshipChange
from workbench.catalog.projector import GROUP, CatalogProjector
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent, ConsumerRunner, RunnerConfig
from workbench.events.envelope import CloudEvent
from workbench.events.producer import (
    EventProducer,
    EventRejected,
    InvalidPayloadError,
    wait_for_all,
    wait_for_offset,
)
from workbench.observability import REGISTRY

pytestmark = pytest.mark.stack


def _unique() -> str:
    return uuid.uuid4().hex[:12]


def _change(source_id: str, version: int, **fields: Any) -> EntityChange:
    return EntityChange(
        domain="test",
        source_system="unit",
        entity_type="widget",
        source_id=source_id,
        version=version,
        **fields,
    )


def _event(change: EntityChange, topic: str = topics.ENTITY_UPDATED, **attrs: Any) -> CloudEvent:
    return CloudEvent(
        source="/tests",
        type=topic,
        partitionkey=change.ref.key,
        data=change.model_dump(mode="json", exclude_none=True),
        **attrs,
    )


def test_register_update_and_history(workbench: Any, workers: Any) -> None:
    sid = _unique()
    workbench.catalog.register(
        "test", "unit", "widget", sid, attributes={"colour": "red"}, tags=["t1"]
    ).wait()
    first = workbench.catalog.get("unit", "widget", sid)
    assert first.version == 1
    assert first.attributes == {"colour": "red"}
    workbench.catalog.register(
        "test", "unit", "widget", sid, attributes={"colour": "blue", "size": 3}
    ).wait()
    second = workbench.catalog.get("unit", "widget", sid)
    assert second.version == 2
    assert second.attributes == {"colour": "blue", "size": 3}
    history = workbench.catalog.history("unit", "widget", sid)
    assert history["version"].to_list() == [1, 2]
    assert history["event_type"].to_list() == [topics.ENTITY_CREATED, topics.ENTITY_UPDATED]
    before = json.loads(history["before_state"][1])
    after = json.loads(history["after_state"][1])
    assert before["attributes"] == {"colour": "red"}
    assert after["attributes"] == {"colour": "blue", "size": 3}
    change = json.loads(history["change_description"][1])
    assert change["added"] == ["size"]
    assert change["changed"] == ["colour"]
    assert change["fields"] == ["tags"]
    # The cache-status row follows the catalog's copy: refreshed by version 2, which
    # invalidated the copy of version 1.
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        status = conn.execute(
            "SELECT source_version, is_stale, invalidation_count, last_refreshed_at, "
            "last_invalidated_at FROM dictamesh_cache_status WHERE entity_id = %s",
            (second.id,),
        ).fetchall()
    assert len(status) == 1
    version, stale, invalidations, refreshed, invalidated = status[0]
    assert (version, stale, invalidations) == (2, False, 1)
    assert refreshed == invalidated == second.updated_at


def test_duplicates_and_stale_versions_are_no_ops(workbench: Any, workers: Any) -> None:
    sid = _unique()
    producer = workbench.producer
    v3 = _event(
        _change(sid, 3, attributes={"v": 3}),
        traceparent=("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    handles = [
        producer.publish(topics.ENTITY_UPDATED, v3),
        producer.publish(topics.ENTITY_UPDATED, v3),  # the very same event again
        producer.publish(topics.ENTITY_UPDATED, _event(_change(sid, 2, attributes={"v": 2}))),
        producer.publish(topics.ENTITY_UPDATED, _event(_change(sid, 3, attributes={"v": "other"}))),
    ]
    wait_for_all(handles)
    entity = workbench.catalog.get("unit", "widget", sid)
    assert entity.version == 3
    assert entity.attributes == {"v": 3}
    history = workbench.catalog.history("unit", "widget", sid)
    # The late v2 joins the history without changing the entity; the duplicate and the
    # conflicting second v3 do not.
    assert history["version"].to_list() == [2, 3]
    assert json.loads(history["change_description"][0])["late"] is True
    assert history["trace_id"].to_list() == [None, "4bf92f3577b34da6a3ce929d0e0e4736"]


def test_a_second_event_claiming_a_version_is_counted_and_not_applied(
    workbench: Any, workers: Any
) -> None:
    system = f"unit-{_unique()}"
    first = EntityChange(
        domain="test", source_system=system, entity_type="widget", source_id="w", version=1
    )
    created = _event(first.model_copy(update={"attributes": {"v": "a"}}), topics.ENTITY_CREATED)
    rival = _event(first.model_copy(update={"attributes": {"v": "b"}}), topics.ENTITY_CREATED)

    def conflicts() -> float:
        value = REGISTRY.get_sample_value(
            "dictamesh_catalog_version_conflicts_total",
            {"group": GROUP, "source_system": system},
        )
        return value or 0.0

    producer = workbench.producer
    # One topic and one key, so one partition: a replay of the topics sees the same order (the
    # replay test shares them, and across topics the winner would depend on arrival order).
    wait_for_all([producer.publish(topics.ENTITY_CREATED, created)])
    wait_for_all(
        [
            producer.publish(topics.ENTITY_CREATED, rival),
            producer.publish(topics.ENTITY_CREATED, created),  # a re-delivery is no conflict
        ]
    )
    history = workbench.catalog.history(system, "widget", "w")
    assert history["version"].to_list() == [1]
    assert workbench.catalog.get(system, "widget", "w").attributes == {"v": "a"}
    assert conflicts() == 1


def test_deletes_are_soft_and_keep_history(workbench: Any, workers: Any) -> None:
    sid = _unique()
    target = EntityRef(source_system="unit", entity_type="gadget", source_id=_unique())
    workbench.catalog.register(
        "test",
        "unit",
        "widget",
        sid,
        attributes={"a": 1},
        relationships=[RelationshipChange(type="uses", target=target)],
    ).wait()
    workbench.catalog.delete("unit", "widget", sid).wait()
    entity = workbench.catalog.get("unit", "widget", sid)
    assert entity.is_deleted
    assert entity.version == 2
    assert entity.attributes == {"a": 1}, "a delete keeps what the entity was"
    assert (
        workbench.catalog.entities(source_system="unit", entity_type="widget", limit=1000)
        .filter(__import__("polars").col("source_id") == sid)
        .height
        == 0
    )
    assert workbench.catalog.history("unit", "widget", sid)["event_type"].to_list() == [
        topics.ENTITY_CREATED,
        topics.ENTITY_DELETED,
    ]
    assert workbench.catalog.relationships("unit", "widget", sid).height == 0
    assert workbench.catalog.relationships("unit", "widget", sid, include_deleted=True).height == 1


def test_relationships_resolve_when_the_target_arrives(workbench: Any, workers: Any) -> None:
    sid, gid = _unique(), _unique()
    gadget = EntityRef(source_system="unit", entity_type="gadget", source_id=gid)
    workbench.catalog.register(
        "test",
        "unit",
        "widget",
        sid,
        relationships=[
            RelationshipChange(
                type="uses", target=gadget, cardinality="many_to_many", confidence=0.75
            )
        ],
    ).wait()
    edges = workbench.catalog.relationships("unit", "widget", sid)
    assert edges.select(
        "direction", "relationship_type", "to_source_id", "target_known", "confidence"
    ).rows() == [("out", "uses", gid, False, 0.75)]
    workbench.catalog.register("test", "unit", "gadget", gid, attributes={"x": 1}).wait()
    assert workbench.catalog.relationships("unit", "widget", sid)["target_known"].to_list() == [
        True
    ]
    incoming = workbench.catalog.relationships("unit", "gadget", gid, direction="in")
    assert incoming.select("direction", "from_source_id").rows() == [("in", sid)]
    # Listing the edges again in full retires the ones left out.
    workbench.catalog.register("test", "unit", "widget", sid, relationships=[]).wait()
    assert workbench.catalog.relationships("unit", "widget", sid).height == 0


def test_text_search_and_pagination(workbench: Any, workers: Any) -> None:
    domain = f"paging-{_unique()}"
    handles = [
        workbench.catalog.register(
            domain,
            "unit",
            "page",
            f"{domain}-{i}",
            attributes={"note": "quarterly invoice" if i % 2 else "x"},
        )
        for i in range(7)
    ]
    wait_for_all(handles)
    first = workbench.catalog.entities(domain=domain, limit=4)
    rest = workbench.catalog.entities(domain=domain, limit=4, cursor=first["id"][-1])
    assert first.height == 4
    assert rest.height == 3
    assert set(first["id"]).isdisjoint(set(rest["id"]))
    found = workbench.catalog.entities(domain=domain, text="invoices")
    assert found.height == 3


def test_text_search_ranks_matches_and_pages_in_rank_order(workbench: Any, workers: Any) -> None:
    domain = f"ranking-{_unique()}"
    notes = {
        "weak": {"note": "an invoice"},
        "strong": {"note": "invoice invoice invoice, the overdue invoice", "memo": "invoice"},
        "named": {"note": "nothing here"},
        "middle": {"note": "invoice and another invoice"},
        "none": {"note": "a receipt"},
    }
    wait_for_all(
        [
            workbench.catalog.register(
                domain,
                "unit",
                "ranked",
                f"{domain}-{key}",
                attributes=attributes,
                display_name="Invoice run" if key == "named" else None,
            )
            for key, attributes in notes.items()
        ]
    )
    found = workbench.catalog.entities(domain=domain, text="invoice")
    ranked = [sid.removeprefix(f"{domain}-") for sid in found["source_id"]]
    # More mentions rank higher; a mention in the name outweighs one in the attributes.
    assert sorted(ranked) == ["middle", "named", "strong", "weak"]
    assert ranked.index("strong") < ranked.index("middle") < ranked.index("weak")
    assert ranked.index("named") < ranked.index("weak")
    assert found["relevance"].to_list() == sorted(found["relevance"], reverse=True)
    pages, cursor = [], None
    while True:
        page = workbench.catalog.entities(domain=domain, text="invoice", limit=1, cursor=cursor)
        if page.height == 0:
            break
        pages.append(page["source_id"][0])
        cursor = page["id"][-1]
    assert pages == found["source_id"].to_list()

    counts = dict(workbench.catalog.facet_counts("entity_type", domain=domain))
    assert counts == {"ranked": 5}
    assert dict(workbench.catalog.facet_counts("entity_type", domain=domain, text="invoice")) == {
        "ranked": 4
    }
    # A facet's own filter is left out: the other domains stay countable.
    by_domain = dict(workbench.catalog.facet_counts("domain", domain=domain, text="receipt"))
    assert by_domain[domain] == 1


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (
            b"not json at all",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"p1"),
                ("ce_source", b"/t"),
                ("ce_type", b"dictamesh.entity.created"),
                ("content-type", b"application/json"),
            ],
            "data-not-json",
        ),
        (b'{"domain": "x"}', [], "not-a-cloudevent"),
        (
            b"{}",
            [
                ("ce_specversion", b"0.3"),
                ("ce_id", b"p2"),
                ("ce_source", b"/t"),
                ("ce_type", b"dictamesh.entity.created"),
            ],
            "unsupported-specversion",
        ),
        (
            json.dumps(
                {
                    "domain": "d",
                    "source_system": "s",
                    "entity_type": "e",
                    "source_id": "1",
                    "version": 0,
                }
            ).encode(),
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"p3"),
                ("ce_source", b"/t"),
                ("ce_type", b"dictamesh.entity.created"),
                ("content-type", b"application/json"),
            ],
            "schema-invalid",
        ),
        (
            b"{" + b" " * 5_000_000 + b"}",
            [
                ("ce_specversion", b"1.0"),
                ("ce_id", b"p4"),
                ("ce_source", b"/t"),
                ("ce_type", b"dictamesh.entity.created"),
            ],
            "payload-too-large",
        ),
    ],
    ids=["not-json", "no-ce-headers", "wrong-specversion", "schema-invalid", "5MB"],
)
def test_poison_records_go_to_the_dead_letter_topic(
    workbench: Any, workers: Any, value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    marker = _unique().encode()
    delivered: list[Any] = []
    producer = raw_producer(workbench.endpoints.kafka_bootstrap)
    producer.produce(
        topics.ENTITY_CREATED,
        value=value,
        key=marker,
        headers=headers,
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    producer.flush(30)
    [(error, message)] = delivered
    assert error is None, error
    # The pipeline goes on: a valid event after the poison one is applied.
    sid = _unique()
    workbench.catalog.register("test", "unit", "after-poison", sid).wait()
    # Waiting for the poison record itself says it was dead-lettered, and why.
    with pytest.raises(EventRejected, match=rf"dead-lettered \({reason}: "):
        wait_for_offset(
            workbench.endpoints.postgres_url,
            GROUP,
            topics.ENTITY_CREATED,
            message.partition(),
            message.offset(),
            30,
        )
    [dead] = read_records(
        workbench.endpoints.kafka_bootstrap,
        topics.dead_letter_topic(topics.ENTITY_CREATED),
        lambda m: m.key() == marker,
    )
    dlq = {k: v.decode() for k, v in dead.headers() if k.startswith("dlq_")}
    assert dlq["dlq_reason"] == reason
    assert dlq["dlq_original_topic"] == topics.ENTITY_CREATED
    assert dlq["dlq_original_partition"] == str(message.partition())
    assert dlq["dlq_original_offset"] == str(message.offset())
    assert dlq["dlq_exception"].startswith("InvalidEventError")
    assert dead.value() == value, "the original record is kept for replay"
    assert workbench.catalog.get("unit", "after-poison", sid) is not None


def _table(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_replaying_the_topics_from_the_start_yields_the_same_tables(
    workbench: Any, workers: Any, tmp_path: Any
) -> None:
    # Some traffic of its own, so the test holds even when run alone.
    handles = [
        workbench.catalog.register("replay", "unit", "r", str(i), attributes={"i": i})
        for i in range(20)
    ]
    wait_for_all(handles)
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer(
        {
            "bootstrap.servers": workbench.endpoints.kafka_bootstrap,
            "group.id": "tests-probe",
            "log_level": 0,
        }
    )
    ends: dict[tuple[str, int], int] = {}
    for topic in topics.ENTITY_TOPICS:
        for partition in probe.list_topics(topic, timeout=10).topics[topic].partitions:
            ends[(topic, partition)] = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )[1]
    probe.close()

    replica = f"replica_{_unique()}"
    admin = workbench.endpoints.postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{replica}"')
    replica_url = f"{admin}/{replica}"
    engine = db.make_engine(replica_url)
    db.migrate_up(engine)
    engine.dispose()

    def caught_up(url: str, group: str) -> bool:
        done = dict(
            ((t, p), o)
            for t, p, o in _table(
                url,
                (
                    "SELECT topic, kafka_partition, next_offset FROM dictamesh_consumer_offsets "
                    f"WHERE group_id = '{group}'"
                ),
            )
        )
        return all(done.get(key, 0) >= end for key, end in ends.items() if end > 0)

    deadline = time.monotonic() + 120
    while not caught_up(workbench.endpoints.postgres_url, GROUP):
        assert time.monotonic() < deadline, "the live projection never caught up"
        time.sleep(0.1)
    group = f"replay-{_unique()}"
    runner = ConsumerRunner(
        CatalogProjector(group=group),
        RunnerConfig(bootstrap=workbench.endpoints.kafka_bootstrap, postgres_url=replica_url),
    )
    runner.run(until=lambda: caught_up(replica_url, group) or time.monotonic() > deadline)
    assert caught_up(replica_url, group)

    queries = [
        "SELECT * FROM dictamesh_entity_catalog ORDER BY id",
        # updated_at of a retired edge is when the projection learnt it was retired.
        "SELECT id, from_entity_id, to_entity_id, relationship_type, cardinality, confidence, "
        "metadata, is_deleted, created_at, to_source_system, to_entity_type, to_source_id, "
        "version FROM dictamesh_entity_relationships ORDER BY id",
        # before_state is the state the projection saw at the time, which depends on arrival
        # order across the created/updated/deleted topics; every other column must agree.
        "SELECT event_id, event_source, event_type, entity_id, entity_version, after_state, "
        "trace_id, topic, kafka_partition, kafka_offset, occurred_at FROM dictamesh_event_log "
        "ORDER BY event_source, event_id",
        "SELECT cache_key, entity_id, source_version, last_refreshed_at "
        "FROM dictamesh_cache_status ORDER BY cache_key",
    ]
    for query in queries:
        assert _table(replica_url, query) == _table(workbench.endpoints.postgres_url, query), query
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{replica}" WITH (FORCE)')


def test_time_travel_gives_an_entity_and_a_query_as_they_were(workbench: Any, workers: Any) -> None:
    from datetime import UTC, datetime

    domain = f"travel-{_unique()}"
    sid = _unique()
    workbench.catalog.register(domain, "unit", "doc", sid, attributes={"title": "draft"}).wait()
    after_v1 = datetime.now(UTC)
    workbench.catalog.register(domain, "unit", "doc", sid, attributes={"title": "final"}).wait()
    workbench.catalog.register(domain, "unit", "doc", f"{sid}-b", attributes={"title": "b"}).wait()
    after_v2 = datetime.now(UTC)
    workbench.catalog.delete("unit", "doc", sid).wait()

    then = workbench.catalog.get("unit", "doc", sid, as_of=after_v1)
    assert then.version == 1
    assert then.attributes == {"title": "draft"}
    assert not then.is_deleted
    assert workbench.catalog.get("unit", "doc", sid, as_of=after_v2).attributes == {
        "title": "final"
    }
    assert workbench.catalog.get("unit", "doc", sid).is_deleted
    before_everything = datetime(2000, 1, 1, tzinfo=UTC)
    assert workbench.catalog.get("unit", "doc", sid, as_of=before_everything) is None

    assert workbench.catalog.entities(domain=domain, as_of=after_v1)["source_id"].to_list() == [sid]
    assert sorted(workbench.catalog.entities(domain=domain, as_of=after_v2)["source_id"]) == sorted(
        [sid, f"{sid}-b"]
    )
    assert workbench.catalog.entities(domain=domain)["source_id"].to_list() == [f"{sid}-b"]
    assert workbench.catalog.entities(domain=domain, text="draft", as_of=after_v1).height == 1
    # Relevance pages over the catalog as it was: each match once.
    pages, cursor = [], None
    while page := workbench.catalog.entities(
        domain=domain, text="final or b", as_of=after_v2, limit=1, cursor=cursor
    ).rows(named=True):
        pages.append(page[0]["source_id"])
        cursor = str(page[0]["id"])
    assert sorted(pages) == sorted([sid, f"{sid}-b"])
    assert workbench.catalog.entities(domain=domain, text="draft").height == 0

    with pytest.raises(InvalidEntityError, match="no timezone"):
        workbench.catalog.get("unit", "doc", sid, as_of=datetime(2026, 1, 1))
    with pytest.raises(InvalidEntityError, match="not an entity id"):
        workbench.catalog.entities(cursor="'; DROP TABLE x; --")


def test_time_travel_gives_the_relationships_as_they_were(workbench: Any, workers: Any) -> None:
    from datetime import UTC, datetime

    sid, first, second = _unique(), _unique(), _unique()
    catalog = workbench.catalog

    def uses(gid: str) -> RelationshipChange:
        target = EntityRef(source_system="unit", entity_type="gadget", source_id=gid)
        return RelationshipChange(type="uses", target=target, confidence=0.5)

    catalog.register("test", "unit", "widget", sid, relationships=[uses(first)]).wait()
    catalog.register("test", "unit", "gadget", first).wait()
    at_first = datetime.now(UTC)
    catalog.register("test", "unit", "widget", sid, attributes={"n": 2}).wait()  # edges kept
    at_unchanged = datetime.now(UTC)
    catalog.register("test", "unit", "widget", sid, relationships=[uses(second)]).wait()
    at_second = datetime.now(UTC)
    catalog.delete("unit", "widget", sid).wait()

    def out(when: datetime | None) -> list[tuple[Any, ...]]:
        edges = catalog.relationships("unit", "widget", sid, direction="out", as_of=when)
        columns = ("relationship_type", "to_source_id", "confidence", "target_known")
        return edges.select(*columns).rows()

    assert out(datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert out(at_first) == [("uses", first, 0.5, True)]
    assert out(at_unchanged) == [("uses", first, 0.5, True)]
    assert out(at_second) == [("uses", second, 0.5, False)]
    assert out(datetime.now(UTC)) == []  # the delete retired them
    assert catalog.relationships("unit", "widget", sid).height == 0

    def incoming(gid: str, when: datetime) -> list[tuple[Any, ...]]:
        edges = catalog.relationships("unit", "gadget", gid, direction="in", as_of=when)
        return edges.select("direction", "from_source_id").rows()

    assert incoming(first, at_first) == [("in", sid)]
    assert incoming(first, at_second) == []
    assert incoming(second, at_second) == [("in", sid)]
    both = catalog.relationships("unit", "gadget", first, as_of=at_unchanged)
    assert both["direction"].to_list() == ["in"]


def test_a_version_reads_as_it_left_the_entity_even_when_versions_share_a_time(
    workbench: Any, workers: Any
) -> None:
    """Versions sent without their own time take the record's millisecond stamp, so two can tie."""
    from datetime import UTC, datetime

    sid, first, second = _unique(), _unique(), _unique()
    catalog, moment = workbench.catalog, datetime.now(UTC)

    def publish(version: int, stage: str, gadget: str) -> None:
        target = EntityRef(source_system="unit", entity_type="gadget", source_id=gadget)
        change = EntityChange(
            domain="test",
            source_system="unit",
            entity_type="widget",
            source_id=sid,
            version=version,
            attributes={"stage": stage},
            relationships=[RelationshipChange(type="uses", target=target)],
        )
        topic = topics.ENTITY_CREATED if version == 1 else topics.ENTITY_UPDATED
        event = CloudEvent(
            source="/test",
            type=topic,
            subject=change.ref.key,
            partitionkey=change.ref.key,
            time=moment,
            data=change.model_dump(mode="json", exclude_none=True),
        )
        workbench.producer.publish(topic, event).wait()

    publish(1, "draft", first)
    publish(2, "final", second)

    def out(**moment_or_version: Any) -> list[str]:
        edges = catalog.relationships("unit", "widget", sid, direction="out", **moment_or_version)
        return edges["to_source_id"].to_list()

    assert catalog.get("unit", "widget", sid, version=1).attributes == {"stage": "draft"}
    assert out(version=1) == [first]
    assert catalog.get("unit", "widget", sid, version=2).attributes == {"stage": "final"}
    assert out(version=2) == [second]
    # By time, the newest version of that moment stands for it.
    assert catalog.get("unit", "widget", sid, as_of=moment).version == 2
    assert out(as_of=moment) == [second]
    assert catalog.get("unit", "widget", sid, version=0) is None
    assert out(version=0) == []
    with pytest.raises(InvalidEntityError, match="both given"):
        catalog.get("unit", "widget", sid, version=1, as_of=moment)


def test_edges_logged_before_versions_carried_them_travel_by_their_own_times(
    workbench: Any, workers: Any
) -> None:
    """A catalog written before versions logged their edges: the edge table's times answer."""
    from datetime import UTC, datetime, timedelta

    from workbench.catalog.model import entity_id, relationship_id

    sid, gid = _unique(), _unique()
    catalog = workbench.catalog
    catalog.register("test", "unit", "widget", sid).wait()
    catalog.register("test", "unit", "gadget", gid).wait()
    widget, gadget = entity_id("unit", "widget", sid), entity_id("unit", "gadget", gid)
    created = datetime.now(UTC) + timedelta(hours=1)
    retired = created + timedelta(hours=1)
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        conn.execute(  # as the projector wrote edges then: in the table only, now retired
            "INSERT INTO dictamesh_entity_relationships (id, from_entity_id, to_entity_id, "
            "relationship_type, to_source_system, to_entity_type, to_source_id, version, "
            "is_deleted, created_at, updated_at) "
            "VALUES (%s, %s, %s, 'uses', 'unit', 'gadget', %s, 1, true, %s, %s)",
            (relationship_id(widget, "uses", gadget), widget, gadget, gid, created, retired),
        )

    def edges(when: datetime, *, direction: str = "out") -> list[tuple[Any, ...]]:
        if direction == "out":
            found = catalog.relationships("unit", "widget", sid, direction="out", as_of=when)
            return found.select("to_source_id", "target_known").rows()
        found = catalog.relationships("unit", "gadget", gid, direction="in", as_of=when)
        return found.select("from_source_id", "target_known").rows()

    assert edges(created - timedelta(minutes=1)) == []
    assert edges(created + timedelta(minutes=1)) == [(gid, True)]
    assert edges(created + timedelta(minutes=1), direction="in") == [(sid, True)]
    assert edges(retired + timedelta(minutes=1)) == []


def test_attributes_are_validated_against_the_registered_schema_before_sending(
    workbench: Any, workers: Any
) -> None:
    subject = f"unit-widget-{_unique()}"
    workbench.schemas.register(
        subject,
        {
            "type": "object",
            "properties": {"size": {"type": "integer", "minimum": 0}, "colour": {"type": "string"}},
            "required": ["size"],
        },
        schema_format="JSON",
    )
    sid = _unique()
    with pytest.raises(InvalidPayloadError) as caught:
        workbench.catalog.register(
            "test", "unit", "widget", sid, attributes={"size": -3}, schema_subject=subject
        )
    assert "attributes/size" in str(caught.value)
    assert subject in str(caught.value)
    assert workbench.catalog.get("unit", "widget", sid) is None
    workbench.catalog.register(
        "test", "unit", "widget", sid, attributes={"size": 3}, schema_subject=subject
    ).wait()
    assert workbench.catalog.get("unit", "widget", sid).attributes == {"size": 3}

    # Any publisher of entity events (a connector, wb.events.publish) is held to the schema.
    bad = _change(_unique(), 1, attributes={"colour": "red"}, schema_subject=subject)
    with pytest.raises(InvalidPayloadError, match=r"attributes/\(root\) breaks schema .*'size'"):
        workbench.events.publish(topics.ENTITY_CREATED, _event(bad, topics.ENTITY_CREATED))


def test_a_new_schema_version_applies_to_a_running_producer(workbench: Any) -> None:
    subject = f"unit-gadget-{_unique()}"
    integer = {"type": "object", "properties": {"size": {"type": "integer"}}}
    workbench.schemas.register(subject, integer, schema_format="JSON")
    producer = EventProducer(
        workbench.endpoints.kafka_bootstrap, postgres_url=workbench.endpoints.postgres_url
    )
    producer.schemas.ttl = 0  # read the registry at every publish
    change = _change(_unique(), 1, attributes={"size": "L"}, schema_subject=subject)
    with pytest.raises(InvalidPayloadError, match="version 1: 'L' is not of type 'integer'"):
        producer.publish(topics.ENTITY_CREATED, _event(change, topics.ENTITY_CREATED))
    text = {"type": "object", "properties": {"size": {"type": ["integer", "string"]}}}
    workbench.schemas.register(subject, text, schema_format="JSON")
    producer.publish(topics.ENTITY_CREATED, _event(change, topics.ENTITY_CREATED)).delivered()
    unchecked = EventProducer(workbench.endpoints.kafka_bootstrap)  # no catalog database
    with pytest.raises(InvalidPayloadError, match="no catalog database"):
        unchecked.publish(topics.ENTITY_CREATED, _event(change, topics.ENTITY_CREATED))


def test_an_event_reusing_an_earlier_events_id_is_a_duplicate(workbench: Any, workers: Any) -> None:
    """Source and id identify a CloudEvent: a second change sent under them is not applied."""
    sid = _unique()
    first = _event(_change(sid, 1, attributes={"v": "first"}))
    reused = _event(_change(sid, 2, attributes={"v": "second"}), id=first.id)
    following = _event(_change(sid, 3, attributes={"v": "third"}))
    producer = workbench.producer
    # All on one topic and key, so a replay of the topics sees them in this order too.
    wait_for_all([producer.publish(topics.ENTITY_UPDATED, first)])
    wait_for_all(
        [
            producer.publish(topics.ENTITY_UPDATED, reused),
            producer.publish(topics.ENTITY_UPDATED, following),
        ]
    )
    history = workbench.catalog.history("unit", "widget", sid)
    assert history["version"].to_list() == [1, 3]
    assert workbench.catalog.get("unit", "widget", sid).attributes == {"v": "third"}
    # The rest of the batch is applied, and a new entity's row is made, on the merging path.
    again = _event(_change(sid, 4, attributes={"v": "fourth"}), id=following.id)
    fresh = _change(_unique(), 1, attributes={"v": "new"})
    wait_for_all(
        [
            producer.publish(topics.ENTITY_UPDATED, again),
            producer.publish(topics.ENTITY_UPDATED, _event(fresh)),
        ]
    )
    assert workbench.catalog.get("unit", "widget", sid).version == 3
    assert workbench.catalog.get("unit", "widget", fresh.source_id).attributes == {"v": "new"}


_EDGE_A = RelationshipChange(
    type="uses", target=EntityRef(source_system="unit", entity_type="gadget", source_id="a")
)
_EDGE_X = RelationshipChange(
    type="uses", target=EntityRef(source_system="unit", entity_type="gadget", source_id="x")
)


def _edges_after(workbench: Any, batches: list[list[tuple[EntityChange, str]]]) -> list[Any]:
    """Apply the batches straight to the projector; the entity's edges as (target, retired)."""
    projector = CatalogProjector(group=f"edges-{_unique()}")
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        for offset, batch in enumerate(batches):
            consumed = [
                ConsumedEvent(_event(change, topic), topic, 0, offset, None)
                for change, topic in batch
            ]
            projector.apply(conn, [(c, projector.prepare(c)) for c in consumed])
            conn.commit()
        change = batches[0][0][0]
        return conn.execute(
            "SELECT to_source_id, is_deleted FROM dictamesh_entity_relationships "
            "WHERE from_entity_id = %s ORDER BY to_source_id",
            (change.ref.entity_id,),
        ).fetchall()


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "one-by-one"])
def test_a_delete_then_a_recreation_keeps_the_new_edges_however_batched(
    workbench: Any, batched: bool
) -> None:
    sid = _unique()
    created = (_change(sid, 1, relationships=[_EDGE_A]), topics.ENTITY_CREATED)
    deleted = (_change(sid, 2), topics.ENTITY_DELETED)
    recreated = (_change(sid, 3, relationships=[_EDGE_X]), topics.ENTITY_UPDATED)
    later = [[deleted, recreated]] if batched else [[deleted], [recreated]]
    assert _edges_after(workbench, [[created], *later]) == [("a", True), ("x", False)]


@pytest.mark.parametrize("order", [(1, 2), (2, 1)], ids=["in-order", "delete-late"])
def test_a_delete_arriving_late_still_retires_the_edges_before_it(
    workbench: Any, order: tuple[int, int]
) -> None:
    """Deletes travel on their own topic, so a replay may read v3 before the v2 delete."""
    sid = _unique()
    events = [
        (_change(sid, 1, relationships=[_EDGE_A]), topics.ENTITY_CREATED),
        (_change(sid, 2), topics.ENTITY_DELETED),
        (_change(sid, 3, attributes={"back": True}), topics.ENTITY_UPDATED),  # edges unchanged
    ]
    batches = [[events[0]], *([events[i]] for i in order)]
    assert _edges_after(workbench, batches) == [("a", True)]


def test_registering_a_version_the_catalog_already_has_is_refused(
    workbench: Any, workers: Any
) -> None:
    sid = _unique()
    workbench.catalog.register("test", "unit", "widget", sid, attributes={"n": 1}).wait()
    workbench.catalog.register("test", "unit", "widget", sid, attributes={"n": 2}).wait()
    with pytest.raises(InvalidEntityError, match=r"version=2 is not newer than version 2"):
        workbench.catalog.register("test", "unit", "widget", sid, version=2, attributes={"n": 9})
    assert workbench.catalog.get("unit", "widget", sid).attributes == {"n": 2}
    workbench.catalog.register("test", "unit", "widget", sid, version=5, attributes={"n": 5}).wait()
    assert workbench.catalog.get("unit", "widget", sid).version == 5
