"""Interoperability with the official CloudEvents Python SDK, both ways.

The SDK's Kafka binding (`cloudevents.kafka`) lives under `cloudevents.v1` since SDK 2.0.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from cloudevents.v1.http import CloudEvent as SdkEvent
from cloudevents.v1.kafka import (
    KafkaMessage,
    from_binary,
    from_structured,
    to_binary,
    to_structured,
)

from tests.helpers import raw_producer, read_records
from workbench.events import topics
from workbench.events.envelope import CloudEvent
from workbench.events.producer import EventProducer, wait_for_offset

pytestmark = pytest.mark.stack


def _entity(source_id: str) -> dict[str, Any]:
    return {
        "domain": "sdk",
        "source_system": "sdk",
        "entity_type": "thing",
        "source_id": source_id,
        "version": 1,
        "attributes": {"written_by": "sdk"},
    }


@pytest.mark.parametrize("convert", [to_binary, to_structured], ids=["binary", "structured"])
def test_an_event_the_sdk_writes_is_applied(convert: Any, workbench: Any, workers: Any) -> None:
    source_id = f"sdk-{uuid.uuid4()}"
    event = SdkEvent(
        {
            "type": topics.ENTITY_CREATED,
            "source": "/sdk/test",
            "partitionkey": f"sdk/thing/{source_id}",
            "datacontenttype": "application/json",
        },
        _entity(source_id),
    )
    message = convert(event)
    delivered: list[Any] = []
    producer = raw_producer(workbench.endpoints.kafka_bootstrap)
    producer.produce(
        topics.ENTITY_CREATED,
        value=message.value,
        key=message.key,
        headers=list(message.headers.items()),
        on_delivery=lambda err, msg: delivered.append(msg),
    )
    producer.flush(10)
    wait_for_offset(
        workbench.endpoints.postgres_url,
        "dictamesh.catalog-projector",
        topics.ENTITY_CREATED,
        delivered[0].partition(),
        delivered[0].offset(),
        60,
    )
    entity = workbench.catalog.get("sdk", "thing", source_id)
    assert entity is not None
    assert entity.attributes == {"written_by": "sdk"}
    history = workbench.catalog.history("sdk", "thing", source_id)
    assert history["event_source"].to_list() == ["/sdk/test"]
    assert history["event_id"].to_list() == [event["id"]]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_an_event_the_workbench_writes_is_read_intact_by_the_sdk(mode: str, workbench: Any) -> None:
    marker = str(uuid.uuid4())
    ours = CloudEvent(
        source="/workbench/test",
        type=topics.ADAPTER_EVENT,
        subject="s-1",
        correlationid="corr-1",
        causationid="cause-1",
        partitionkey=marker,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        extensions={"tenant": "acme"},
        data={"hello": "world", "n": 3},
    )
    producer = EventProducer(workbench.endpoints.kafka_bootstrap, mode=mode)  # type: ignore[arg-type]
    producer.publish(topics.ADAPTER_EVENT, ours).delivered()
    [record] = read_records(
        workbench.endpoints.kafka_bootstrap,
        topics.ADAPTER_EVENT,
        lambda m: m.key() == marker.encode(),
    )
    message = KafkaMessage(
        headers=dict(record.headers() or []), key=record.key(), value=record.value()
    )
    sdk = (
        from_binary(message)
        if mode == "binary"
        else from_structured(message, data_unmarshaller=lambda d: d)
    )
    assert sdk["id"] == ours.id
    assert sdk["source"] == "/workbench/test"
    assert sdk["type"] == topics.ADAPTER_EVENT
    assert sdk["specversion"] == "1.0"
    assert sdk["subject"] == "s-1"
    assert sdk["correlationid"] == "corr-1"
    assert sdk["causationid"] == "cause-1"
    assert sdk["traceparent"] == ours.traceparent
    assert sdk["tenant"] == "acme"
    assert sdk["partitionkey"] in (marker, marker.encode())
    data = sdk.get_data()
    assert (json.loads(data) if isinstance(data, bytes | str) else data) == {
        "hello": "world",
        "n": 3,
    }
    assert sdk["time"].replace("Z", "+00:00") == ours.time.isoformat()
