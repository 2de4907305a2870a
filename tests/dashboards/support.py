"""What the dashboard tests share: hostile text, a faceted catalog, real dead letters, what a
topic received, and lineage chains.

Everything here reads or writes the session's real stack; nothing stands in for a server.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import panel as pn
import psycopg

from tests.helpers import raw_producer
from workbench.events.deadletters import letter_id
from workbench.events.envelope import CloudEvent
from workbench.events.producer import wait_for_all
from workbench.events.topics import dead_letter_topic

PAYLOAD = '<img src=x onerror="window.__pwned=1">'


def unique() -> str:
    return uuid.uuid4().hex[:10]


def find(objects: Iterable[Any], css_class: str) -> Any:
    """The first pane or widget with this css class, looking inside rows, columns and tabs."""
    for obj in objects:
        if css_class in (getattr(obj, "css_classes", None) or []):
            return obj
        if isinstance(obj, pn.layout.ListLike | pn.layout.base.NamedListLike):
            found = find(list(obj.objects), css_class)
            if found is not None:
                return found
    return None


# -- catalog entities --------------------------------------------------------------------


def register_hostile(workbench: Any, payload: str = PAYLOAD) -> dict[str, str]:
    """An entity whose every free-text field, as a source system sent it, holds `payload`."""
    identity = {
        "source_system": f"crm-{unique()}",
        "entity_type": f"account{payload}",
        "source_id": f"acct-1{payload}",
    }
    workbench.catalog.register(
        f"sales{payload}",
        *identity.values(),
        display_name=payload,
        owners=[f"ada{payload}", "bob"],
        tags=[f"vip{payload}"],
        attributes={"name": payload},
    ).wait()
    return identity


@dataclass(frozen=True)
class SwappedEdge:
    """An entity whose version 1 uses target `first` and whose version 2 uses `second`."""

    identity: dict[str, str]
    first: str  # target source ids
    second: str


def register_swapped_edge(workbench: Any) -> SwappedEdge:
    """Two versions of one entity, applied before it returns; each names its own stage too."""
    from workbench.catalog.model import EntityRef, RelationshipChange

    tag = unique()
    identity = {"source_system": f"erp-{tag}", "entity_type": "order", "source_id": f"o-{tag}"}
    edge = SwappedEdge(identity, f"warehouse-a-{tag}", f"warehouse-b-{tag}")
    for stage, target in (("draft", edge.first), ("final", edge.second)):
        ships_from = EntityRef(
            source_system=identity["source_system"], entity_type="warehouse", source_id=target
        )
        workbench.catalog.register(
            "orders",
            *identity.values(),
            attributes={"stage": stage},
            relationships=[RelationshipChange(type="ships_from", target=ships_from)],
        ).wait()
    return edge


@dataclass(frozen=True)
class Facets:
    """The names of a small catalog of a test's own, as `register_facets` wrote it."""

    domain: str
    other_domain: str
    crm: str  # source systems
    erp: str
    account: str  # entity types
    invoice: str
    word: str  # said by two entities, and by nothing else on the stack

    def ours(self, value: str) -> bool:
        return value in vars(self).values()


def register_facets(workbench: Any) -> Facets:
    """Eight entities, applied before it returns; erp's invoice is deleted.

    ======  ======  =======  =====================
    domain  system  type     source ids
    ======  ======  =======  =====================
    domain  crm     account  a1 (says word), a2, a3
    domain  crm     invoice  b1 (says word)
    domain  erp     account  c1, c2
    domain  erp     invoice  gone (deleted)
    other   crm     account  d1
    ======  ======  =======  =====================
    """
    tag = unique()
    f = Facets(
        f"facets-{tag}",
        f"facets-other-{tag}",
        f"crm-{tag}",
        f"erp-{tag}",
        f"account-{tag}",
        f"invoice-{tag}",
        f"zq{tag}",
    )
    rows = [
        (f.domain, f.crm, f.account, "a1", f.word),
        (f.domain, f.crm, f.account, "a2", "plain"),
        (f.domain, f.crm, f.account, "a3", "plain"),
        (f.domain, f.crm, f.invoice, "b1", f.word),
        (f.domain, f.erp, f.account, "c1", "plain"),
        (f.domain, f.erp, f.account, "c2", "plain"),
        (f.domain, f.erp, f.invoice, "gone", "plain"),
        (f.other_domain, f.crm, f.account, "d1", "plain"),
    ]
    wait_for_all(
        [
            workbench.catalog.register(*identity, attributes={"note": note})
            for *identity, note in rows
        ],
        timeout=120,
    )
    workbench.catalog.delete(f.erp, f.invoice, "gone").wait(timeout=120)
    return f


# -- dead letters ------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    """A dead letter this test wrote, where the broker put it, and what it carries."""

    topic: str  # the dead-letter topic
    partition: int
    offset: int
    original_topic: str
    key: bytes
    value: bytes
    marker: str  # in its dlq_exception header, so its row on a page can be told apart

    @property
    def letter_id(self) -> str:
        return letter_id(self.topic, self.partition, self.offset)


def write_dead_letters(bootstrap: str, places: Iterable[tuple[str, int]]) -> list[Letter]:
    """For each (original topic, dead-letter partition), a record as a consumer dead-letters it.

    Each is a CloudEvent with a key of its own, in ``<topic>.dlq`` with the ``dlq_*`` headers the
    consumer runner writes; returned in the order given, with the offsets the broker assigned.
    """
    producer = raw_producer(bootstrap)
    reports: dict[str, tuple[Any, Any]] = {}
    written: list[tuple[str, str, Any]] = []
    for original, partition in places:
        marker = unique()
        record = CloudEvent(
            source="/tests/dashboards",
            type=original,
            partitionkey=f"dead-{marker}",
            data={"marker": marker},
        ).to_kafka()
        producer.produce(
            dead_letter_topic(original),
            value=record.value,
            key=record.key,
            partition=partition,
            headers=[
                *record.headers,
                ("dlq_reason", b"sink-rejected"),
                ("dlq_original_topic", original.encode()),
                ("dlq_original_partition", b"0"),
                ("dlq_original_offset", b"0"),
                ("dlq_exception", f"OperationalError: refused {marker}".encode()),
                ("dlq_consumer_group", b"dictamesh.tests-dashboards"),
            ],
            on_delivery=lambda error, message, m=marker: reports.__setitem__(m, (error, message)),
        )
        written.append((marker, original, record))
    assert producer.flush(30) == 0, "the dead letters were not all delivered"
    letters = []
    for marker, original, record in written:
        error, message = reports[marker]
        assert error is None, error
        letters.append(
            Letter(
                message.topic(),
                message.partition(),
                message.offset(),
                original,
                record.key,
                record.value,
                marker,
            )
        )
    return letters


def ends(bootstrap: str, topics: Iterable[str]) -> dict[str, dict[int, int]]:
    """Per topic and partition, an offset at or before its end now: reading from there sees
    every record written afterwards (some brokers report less than the end, never more)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "tests-dashboards-ends", "log_level": 0}
    )
    try:
        marks: dict[str, dict[int, int]] = {}
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            marks[topic] = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions
            }
        return marks
    finally:
        consumer.close()


def records_since(
    bootstrap: str,
    topic: str,
    since: dict[int, int],
    match: Callable[[Any], bool],
    timeout: float = 30.0,
) -> list[Any]:
    """Every record of `topic` from `since` to the end of each partition that `match` takes.

    Reads up to each partition's end, so an empty answer means the topic received none.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "tests-dashboards-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign(
            [TopicPartition(topic, p, since.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        finished: set[int] = set()
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(finished) < len(partitions):
            assert time.monotonic() < deadline, f"{topic} was not read to its end in {timeout} s"
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    finished.add(message.partition())
                continue
            if match(message):
                found.append(message)
        return found
    finally:
        consumer.close()


def replayed(bootstrap: str, since: dict[str, dict[int, int]], letters: list[Letter]) -> list[str]:
    """The letters (by id, sorted) whose records reached their original topic after `since`.

    Each one must arrive as it was dead-lettered: same key and value, its ``dlq_*`` headers
    replaced by ``dlq_replayed_from`` naming the dead letter.
    """
    by_key = {letter.key: letter for letter in letters}
    found = []
    for topic, marks in since.items():
        for record in records_since(bootstrap, topic, marks, lambda m: m.key() in by_key):
            letter = by_key[record.key()]
            assert record.topic() == letter.original_topic
            assert record.value() == letter.value
            headers = dict(record.headers() or [])
            assert headers.get("dlq_replayed_from") == f"{letter.topic}@{letter.offset}".encode()
            assert [k for k in headers if k.startswith("dlq_")] == ["dlq_replayed_from"]
            found.append(letter.letter_id)
    return sorted(found)


# -- a catalog database of a test's own, on the session's Postgres server ------------------


def log_event(url: str, event_type: str, subject: str) -> None:
    """One row of the event log, as the Event Monitor reads it (recorded now)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dictamesh_event_log (event_id, event_source, event_type, subject, "
            "occurred_at) VALUES (%s, '/tests/dashboards', %s, %s, now())",
            (unique(), event_type, subject),
        )


@contextmanager
def tables_missing(url: str, *tables: str) -> Iterator[None]:
    """The tables renamed away, so readers get the server's "does not exist"; back on exit."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for table in tables:
                conn.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


# -- lineage -------------------------------------------------------------------------------


def record_chain(workbench: Any, names: list[str]) -> list[str]:
    """A chain of jobs in a namespace of its own, each reading one dataset and writing the next.

    Returns the datasets as the Lineage page names them, ``namespace/name``, in chain order.
    """
    ns = f"chain-{unique()}"
    for source, target in itertools.pairwise(names):
        workbench.catalog.record_lineage(
            {
                "eventType": "COMPLETE",
                "eventTime": "2026-11-26T10:00:00Z",
                "run": {"runId": str(uuid.uuid4())},
                "job": {"namespace": ns, "name": f"to-{target}"},
                "inputs": [{"namespace": ns, "name": source}],
                "outputs": [{"namespace": ns, "name": target}],
            }
        )
    return [f"{ns}/{name}" for name in names]
