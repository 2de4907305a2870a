"""The producer's contract: failures surface as errors, entity events are checked and keyed."""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any

import pytest

from tests.helpers import read_records
from workbench.catalog.model import EntityChange
from workbench.errors import TerminalError
from workbench.events import topics
from workbench.events.envelope import CloudEvent
from workbench.events.producer import DeliveryError, EventProducer, InvalidPayloadError
from workbench.stack import Endpoints


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_flush_raises_when_records_failed_to_deliver() -> None:
    producer = EventProducer(
        f"127.0.0.1:{_closed_port()}", config={"message.timeout.ms": 300, "log_level": 0}
    )
    event = CloudEvent(source="/unit", type=topics.ADAPTER_EVENT, data={"n": 1})
    handle = producer.publish(topics.ADAPTER_EVENT, event)
    with pytest.raises(DeliveryError, match=rf"1 events were not delivered; the first, {event.id}"):
        producer.flush(30)
    assert handle.error is not None
    producer.flush(1)  # reported once: a later flush has nothing left to report


def test_a_failure_reported_by_its_handle_is_not_reported_again_by_flush() -> None:
    producer = EventProducer(
        f"127.0.0.1:{_closed_port()}", config={"message.timeout.ms": 300, "log_level": 0}
    )
    event = CloudEvent(source="/unit", type=topics.ADAPTER_EVENT, data={"n": 1})
    handle = producer.publish(topics.ADAPTER_EVENT, event)
    with pytest.raises(DeliveryError, match="was not delivered"):
        handle.delivered(30)
    producer.flush(1)


def test_an_entity_event_without_an_entity_change_is_refused_before_it_is_sent() -> None:
    producer = EventProducer(f"127.0.0.1:{_closed_port()}", config={"log_level": 0})
    data = {"domain": "d", "source_system": "s", "entity_type": "t", "version": 1}
    event = CloudEvent(source="/unit", type=topics.ENTITY_CREATED, data=data)
    with pytest.raises(InvalidPayloadError, match=r"field .source_id. field required"):
        producer.publish(topics.ENTITY_CREATED, event)
    assert producer.undelivered == []
    producer.flush(1)  # nothing was queued


def test_entity_events_without_a_partition_key_are_keyed_by_their_entity(stack: Endpoints) -> None:
    """Every version of an entity lands on one partition, so they arrive in order."""
    producer = EventProducer(stack.kafka_bootstrap)
    source_id = f"unkeyed-{uuid.uuid4().hex}"
    handles = []
    for version in (1, 2, 3):
        change = EntityChange(
            domain="tests",
            source_system="producer-tests",
            entity_type="order",
            source_id=source_id,
            version=version,
        )
        event = CloudEvent(
            source="/tests/producer",
            type=topics.ENTITY_UPDATED,
            data=change.model_dump(mode="json"),
        )
        assert event.partitionkey is None
        handles.append(producer.publish(topics.ENTITY_UPDATED, event))
    producer.flush(30)
    key = f"producer-tests/order/{source_id}"
    assert all(handle.event.partitionkey == key for handle in handles)
    records = read_records(
        stack.kafka_bootstrap,
        topics.ENTITY_UPDATED,
        lambda record: record.key() == key.encode(),
        count=3,
    )
    assert len(records) == 3
    assert len({record.partition() for record in records}) == 1
    assert [record.offset() for record in records] == sorted(r.offset() for r in records)


class _PausedFlush:
    """A producer's own client whose flush waits to be let go: a close stopped mid-way."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.flushing = threading.Event()
        self.resume = threading.Event()

    def flush(self, timeout: float) -> int:
        self.flushing.set()
        assert self.resume.wait(30)
        return int(self.client.flush(timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_publish_during_close_is_refused_and_what_came_before_is_delivered(
    stack: Endpoints,
) -> None:
    producer = EventProducer(stack.kafka_bootstrap)
    paused = _PausedFlush(producer._producer)
    producer._producer = paused

    def event() -> CloudEvent:
        return CloudEvent(source=f"/unit/{uuid.uuid4().hex}", type=topics.ADAPTER_EVENT)

    before = producer.publish(topics.ADAPTER_EVENT, event())
    closing = threading.Thread(target=producer.close)
    closing.start()
    try:
        assert paused.flushing.wait(30)
        # Queued now, it would go into a client about to be dropped and never be delivered.
        with pytest.raises(TerminalError, match="closed"):
            producer.publish(topics.ADAPTER_EVENT, event())
        assert "closed" in repr(producer)
    finally:
        paused.resume.set()
        closing.join(30)
    assert not closing.is_alive()
    assert before.delivered(0).offset is not None
    producer.close()  # idempotent
