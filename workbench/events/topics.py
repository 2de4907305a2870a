"""The topics of the DictaMesh backbone, and their dead-letter twins."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from workbench.errors import ComponentUnavailableError

ENTITY_CREATED = "dictamesh.entity.created"
ENTITY_UPDATED = "dictamesh.entity.updated"
ENTITY_DELETED = "dictamesh.entity.deleted"
SCHEMA_CHANGED = "dictamesh.schema.changed"
ADAPTER_EVENT = "dictamesh.adapter.event"
LINEAGE = "dictamesh.lineage"

ENTITY_TOPICS = (ENTITY_CREATED, ENTITY_UPDATED, ENTITY_DELETED)
# Billing (workbench.billing): usage events in, subscription/invoice/payment events out.
USAGE_RECORDED = "dictamesh.usage.recorded"
BILLING_TOPICS = (
    "dictamesh.billing.subscription",
    "dictamesh.billing.invoice",
    "dictamesh.billing.payment",
    USAGE_RECORDED,
)
SEED_TOPICS = (*ENTITY_TOPICS, SCHEMA_CHANGED, ADAPTER_EVENT, LINEAGE, *BILLING_TOPICS)
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 6
    replication_factor: int = 1


def dead_letter_topic(topic: str) -> str:
    """Each source topic has its own dead-letter topic: ``<topic>.dlq``."""
    return topic if topic.endswith(DLQ_SUFFIX) else f"{topic}{DLQ_SUFFIX}"


def all_topics(partitions: int = 6) -> list[TopicSpec]:
    specs = [TopicSpec(name, partitions) for name in SEED_TOPICS]
    specs += [TopicSpec(dead_letter_topic(name), 1) for name in SEED_TOPICS]
    return specs


def ensure_topics(
    bootstrap: str, specs: Iterable[TopicSpec] | None = None, *, timeout: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Idempotent."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    wanted = list(specs if specs is not None else all_topics())
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise ComponentUnavailableError(
            f"The broker at {bootstrap} did not answer: {exc}.",
            remedy="check `dictamesh status`; start the stack with `dictamesh up`.",
        ) from None
    missing = [spec for spec in wanted if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor)
            for s in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another process won the race
                raise
    return created


def group_free_reader(bootstrap: str, group: str) -> Any:
    """A consumer that reads by assignment: it commits nothing and reports each partition's end."""
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )


def read_to_end(reader: Any, assignment: list[Any], timeout: float) -> Iterator[Any]:
    """The records from `assignment` until every partition's end, or until `timeout` seconds."""
    from confluent_kafka import KafkaError

    reader.assign(assignment)
    finished: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    while len(finished) < len(assignment) and time.monotonic() < deadline:
        message = reader.poll(0.2)
        if message is None:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                finished.add((message.topic(), message.partition()))
            continue
        yield message
