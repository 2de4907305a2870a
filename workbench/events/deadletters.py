"""Dead letters: list what each dead-letter topic holds, and replay records to their topic.

A replayed record goes back to its original topic with its original key, value and headers (the
``dlq_*`` headers dropped, a ``dlq_replayed_from`` header added), so the consumers see it as new
and the sinks' idempotence keeps a replay that was already applied from counting twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from workbench.errors import TerminalError
from workbench.events.consumer import record_time
from workbench.events.topics import (
    SEED_TOPICS,
    dead_letter_topic,
    group_free_reader,
    read_to_end,
)


def letter_id(topic: str, partition: int, offset: int) -> str:
    """A dead letter's stable name: its place in its dead-letter topic."""
    return f"{topic}/{partition}@{offset}"


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    original_topic: str
    original_partition: int
    original_offset: int
    exception: str
    consumer_group: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    dead_lettered_at: datetime | None

    @property
    def letter_id(self) -> str:
        return letter_id(self.topic, self.partition, self.offset)


def _header(headers: Iterable[tuple[str, Any]], name: str) -> str:
    for key, value in headers:
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


def read_dead_letters(
    bootstrap: str,
    topics: Iterable[str] | None = None,
    *,
    limit: int = 1000,
    timeout: float = 5.0,
) -> list[DeadLetter]:
    """The records of the dead-letter topics (all seed topics' by default), oldest first."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    names = [dead_letter_topic(t) for t in (topics or SEED_TOPICS)]
    consumer = group_free_reader(bootstrap, "dictamesh-dlq-reader")
    letters: list[DeadLetter] = []
    try:
        metadata = consumer.list_topics(timeout=timeout).topics
        assignment = [
            TopicPartition(name, partition, OFFSET_BEGINNING)
            for name in names
            if name in metadata
            for partition in metadata[name].partitions
        ]
        for message in read_to_end(consumer, assignment, timeout):
            if len(letters) >= limit:
                break
            headers = tuple(message.headers() or [])
            letters.append(
                DeadLetter(
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    reason=_header(headers, "dlq_reason"),
                    original_topic=_header(headers, "dlq_original_topic"),
                    original_partition=int(_header(headers, "dlq_original_partition") or -1),
                    original_offset=int(_header(headers, "dlq_original_offset") or -1),
                    exception=_header(headers, "dlq_exception"),
                    consumer_group=_header(headers, "dlq_consumer_group"),
                    key=message.key(),
                    value=message.value(),
                    headers=headers,
                    dead_lettered_at=record_time(message),
                )
            )
    finally:
        consumer.close()
    return letters


def dead_letter_frame(letters: list[DeadLetter]) -> pl.DataFrame:
    """One row per letter, named by `letter_id` and in place order, so refreshes keep rows put."""
    return pl.DataFrame(
        [
            {
                "letter_id": d.letter_id,
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "reason": d.reason,
                "original_topic": d.original_topic,
                "original_partition": d.original_partition,
                "original_offset": d.original_offset,
                "consumer_group": d.consumer_group,
                "exception": d.exception,
                "bytes": len(d.value or b""),
                "dead_lettered_at": d.dead_lettered_at,
            }
            for d in letters
        ],
        schema={
            "letter_id": pl.String,
            "topic": pl.String,
            "partition": pl.Int64,
            "offset": pl.Int64,
            "reason": pl.String,
            "original_topic": pl.String,
            "original_partition": pl.Int64,
            "original_offset": pl.Int64,
            "consumer_group": pl.String,
            "exception": pl.String,
            "bytes": pl.Int64,
            "dead_lettered_at": pl.Datetime("us", "UTC"),
        },
    ).sort("topic", "partition", "offset")


def replay_letters(bootstrap: str, letter_ids: Iterable[str]) -> int:
    """Replay exactly the dead letters named (by `letter_id`); send none if one is not found."""
    wanted = set(letter_ids)
    if not wanted:
        return 0
    topics = sorted({name.rsplit("/", 1)[0] for name in wanted})
    found = [d for d in read_dead_letters(bootstrap, topics) if d.letter_id in wanted]
    missing = wanted - {d.letter_id for d in found}
    if missing:
        raise TerminalError(
            f"Dead letters not found: {', '.join(sorted(missing))}.",
            remedy="refresh the list of dead letters and select again.",
        )
    return replay(bootstrap, found)


def replay(bootstrap: str, letters: Iterable[DeadLetter]) -> int:
    """Publish each dead letter again to its original topic; return how many were sent."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.max.bytes": 16_777_216,
            "log_level": 3,
        }
    )
    sent = 0
    for letter in letters:
        if not letter.original_topic:
            raise TerminalError(
                f"Dead letter {letter.topic}@{letter.offset} has no dlq_original_topic header.",
                remedy="republish it by hand to the topic it belongs to.",
            )
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in letter.headers if not k.startswith("dlq_")
        ]
        headers.append(("dlq_replayed_from", f"{letter.topic}@{letter.offset}".encode()))
        producer.produce(letter.original_topic, value=letter.value, key=letter.key, headers=headers)
        sent += 1
    remaining = producer.flush(30)
    if remaining:
        raise TerminalError(
            f"{remaining} of {sent} replayed records were not delivered.",
            remedy="check the broker with `dictamesh status` and replay again.",
        )
    return sent
