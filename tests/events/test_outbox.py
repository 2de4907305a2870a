"""The transactional outbox: events exist exactly when their change does, and reach Kafka."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import text

from tests.helpers import free_port, read_records
from workbench.catalog.schemas import IncompatibleSchemaError
from workbench.events.envelope import CloudEvent
from workbench.events.outbox import OutboxRelay, enqueue
from workbench.events.topics import SCHEMA_CHANGED
from workbench.events.workers import Workers


def _pending(workbench: Any, event_id: str) -> bool | None:
    with workbench.engine.connect() as conn:
        row = conn.execute(
            text("SELECT published_at IS NULL FROM dictamesh_outbox WHERE event_id = :id"),
            {"id": event_id},
        ).first()
    return None if row is None else bool(row[0])


def _outbox_events(workbench: Any, subject: str) -> list[str]:
    with workbench.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT event_id FROM dictamesh_outbox WHERE topic = :topic "
                    "AND convert_from(record_value, 'UTF8')::jsonb ->> 'subject' = :subject "
                    "ORDER BY id"
                ),
                {"topic": SCHEMA_CHANGED, "subject": subject},
            ).scalars()
        )


def test_a_registered_schema_is_announced_on_its_topic(workbench: Any, workers: Any) -> None:
    subject = f"orders-{uuid.uuid4().hex[:8]}"
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    registered = workbench.schemas.register(subject, schema)
    (event_id,) = _outbox_events(workbench, subject)

    (record,) = read_records(
        workbench.endpoints.kafka_bootstrap,
        SCHEMA_CHANGED,
        lambda message: dict(message.headers() or []).get("ce_id") == event_id.encode(),
    )
    event = CloudEvent.from_kafka(record.value(), record.headers(), record.key())
    assert event.subject == subject
    assert event.data == {
        "change": "registered",
        "subject": subject,
        "version": registered.version,
        "schema_format": "JSON",
        "compatibility": "BACKWARD",
        "fingerprint": registered.fingerprint,
    }
    assert record.key() == subject.encode()

    # Registering the same schema again changes nothing and announces nothing.
    workbench.schemas.register(subject, schema)
    assert _outbox_events(workbench, subject) == [event_id]


def test_a_rejected_change_leaves_no_event(workbench: Any) -> None:
    subject = f"strict-{uuid.uuid4().hex[:8]}"
    workbench.schemas.register(
        subject,
        {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    )
    with pytest.raises(IncompatibleSchemaError):
        workbench.schemas.register(
            subject,
            {
                "type": "object",
                "properties": {"id": {"type": "string"}, "total": {"type": "number"}},
                "required": ["id", "total"],
            },
        )
    assert len(_outbox_events(workbench, subject)) == 1


def test_events_stay_pending_while_the_broker_is_unreachable(workbench: Any) -> None:
    event = CloudEvent(source="/tests/outbox", type=SCHEMA_CHANGED, data={"n": 1})
    unreachable = OutboxRelay(
        f"127.0.0.1:{free_port()}", workbench.endpoints.postgres_url, delivery_timeout=2
    )
    # Enqueued in a transaction of our own: the session's relay cannot see the row, ours can.
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        conn.execute(
            "INSERT INTO dictamesh_outbox (topic, event_id, record_value) VALUES (%s, %s, %s)",
            (SCHEMA_CHANGED, event.id, event.to_kafka().value),
        )
        assert unreachable.relay_once(conn) == 0
        row = conn.execute(
            "SELECT published_at, attempts, last_error FROM dictamesh_outbox WHERE event_id = %s",
            (event.id,),
        ).fetchone()
        conn.rollback()
    assert row is not None
    published_at, attempts, last_error = row
    assert published_at is None
    assert attempts == 1
    assert last_error


def test_a_rolled_back_transaction_leaves_nothing_to_relay(workbench: Any) -> None:
    event = CloudEvent(source="/tests/outbox", type=SCHEMA_CHANGED, data={"n": 2})

    def failing_change() -> None:
        with workbench.engine.begin() as conn:
            enqueue(conn, SCHEMA_CHANGED, event)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    assert _pending(workbench, event.id) is None


def test_a_relay_publishes_pending_rows_in_order(workbench: Any) -> None:
    events = [
        CloudEvent(
            source="/tests/outbox-order", type=SCHEMA_CHANGED, partitionkey="k", data={"n": n}
        )
        for n in range(5)
    ]
    relay = OutboxRelay(workbench.endpoints.kafka_bootstrap, workbench.endpoints.postgres_url)
    # One transaction, so only this relay sees the rows (the session's relay would share them).
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        for event in events:
            record = event.to_kafka()
            conn.execute(
                "INSERT INTO dictamesh_outbox (topic, event_id, record_key, record_value, headers) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    SCHEMA_CHANGED,
                    event.id,
                    record.key,
                    record.value,
                    Jsonb(
                        [
                            [name, value.decode() if isinstance(value, bytes) else value]
                            for name, value in record.headers
                        ]
                    ),
                ),
            )
        while relay.relay_once(conn):
            pass
        conn.commit()
    assert not any(_pending(workbench, e.id) for e in events)
    records = read_records(
        workbench.endpoints.kafka_bootstrap,
        SCHEMA_CHANGED,
        lambda message: dict(message.headers() or []).get("ce_source") == b"/tests/outbox-order",
        count=5,
    )
    read = [CloudEvent.from_kafka(r.value(), r.headers(), r.key()) for r in records]
    assert read == events


class _Watched(OutboxRelay):
    """A relay that says when a run has reached the outbox."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.relaying = threading.Event()

    def relay_once(self, conn: psycopg.Connection[Any]) -> int:
        self.relaying.set()
        return super().relay_once(conn)


def test_a_stopped_relay_relays_and_runs_again(workbench: Any) -> None:
    relay = _Watched(workbench.endpoints.kafka_bootstrap, workbench.endpoints.postgres_url)
    for _ in range(2):
        relay.relaying.clear()
        workers = Workers([relay]).start()
        assert relay.relaying.wait(30), "the run never reached the outbox"
        workers.stop()
        assert not workers.threads[0].is_alive() and not workers.crashed
        assert relay.producer is None  # released when the run ended
    event = CloudEvent(source=f"/tests/outbox/{uuid.uuid4().hex}", type=SCHEMA_CHANGED)
    # In a transaction of our own, so only this relay sees the row.
    with psycopg.connect(workbench.endpoints.postgres_url) as conn:
        conn.execute(
            "INSERT INTO dictamesh_outbox (topic, event_id, record_value) VALUES (%s, %s, %s)",
            (SCHEMA_CHANGED, event.id, event.to_kafka().value),
        )
        assert relay.relay_once(conn) == 1
        conn.rollback()
