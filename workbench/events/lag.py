"""Freshness of every consumer group: lag in records and in seconds, per partition.

Offsets applied come from ``dictamesh_consumer_offsets`` (written with the sink's rows), the end
of each partition from the broker, so lag is the same whichever process asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from workbench.events.consumer import CONSUMER_LAG, CONSUMER_LAG_SECONDS, record_time


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    applied_offset: int
    end_offset: int
    lag_messages: int
    lag_seconds: float


def consumer_lag(bootstrap: str, postgres_url: str, *, timeout: float = 5.0) -> list[PartitionLag]:
    """Lag of every group that has applied anything, over every partition of its topics.

    Seconds are how long the oldest record not yet applied has waited (0 when caught up):
    how stale what a reader sees can be.
    """
    from confluent_kafka import Consumer

    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT group_id, topic, kafka_partition, next_offset, last_event_time "
            "FROM dictamesh_consumer_offsets"
        ).fetchall()
    applied = {(g, t, p): (offset, stamp) for g, t, p, offset, stamp in rows}
    groups_by_topic: dict[str, set[str]] = {}
    for group, topic, _partition in applied:
        groups_by_topic.setdefault(topic, set()).add(group)
    if not groups_by_topic:
        return []
    probe = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "dictamesh-lag-probe",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    try:
        ends = _end_offsets(probe, sorted(groups_by_topic), timeout)
        positions = {
            (group, topic, partition): applied.get((group, topic, partition), (low, None))[0]
            for (topic, partition), (low, _end) in ends.items()
            for group in groups_by_topic[topic]
        }
        waiting = {
            (topic, partition, offset)
            for (_group, topic, partition), offset in positions.items()
            if offset < ends[(topic, partition)][1]
        }
        stamps = _record_times(probe, waiting, timeout)
    finally:
        probe.close()
    now = datetime.now(UTC)
    result = []
    for (group, topic, partition), offset in sorted(positions.items()):
        end = ends[(topic, partition)][1]
        stamp = stamps.get((topic, partition, offset))
        seconds = (now - stamp).total_seconds() if offset < end and stamp else 0.0
        result.append(
            PartitionLag(
                group, topic, partition, offset, end, max(end - offset, 0), max(seconds, 0.0)
            )
        )
    return result


def _record_times(
    probe: Any, wanted: set[tuple[str, int, int]], timeout: float
) -> dict[tuple[str, int, int], datetime]:
    """Timestamps of the records at the given offsets (the oldest each group still owes)."""
    from confluent_kafka import TopicPartition

    found: dict[tuple[str, int, int], datetime] = {}
    by_partition: dict[tuple[str, int], set[int]] = {}
    for topic, partition, offset in wanted:
        by_partition.setdefault((topic, partition), set()).add(offset)
    # Several groups may owe different offsets of one partition: read from the lowest.
    pending = set(wanted)
    probe.assign([TopicPartition(t, p, min(offs)) for (t, p), offs in by_partition.items()])
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        message = probe.poll(0.2)
        if message is None or message.error() is not None:
            continue
        key = (message.topic(), message.partition(), message.offset())
        if key in pending:
            stamp = record_time(message)
            if stamp is not None:
                found[key] = stamp
            pending.discard(key)
    return found


def _end_offsets(
    probe: Any, topics: list[str], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, end) of every partition, the end read from the partition itself.

    Some brokers (the embedded tansu among them) answer ListOffsets with the base offset of the
    last batch rather than the end of the log, so their watermark is only where reading starts:
    the end-of-partition event that follows gives the true end, on every broker.
    """
    from confluent_kafka import KafkaError, TopicPartition

    watermarks: dict[tuple[str, int], tuple[int, int]] = {}
    for topic in topics:
        metadata = probe.list_topics(topic, timeout=timeout).topics.get(topic)
        for partition in sorted(metadata.partitions if metadata else []):
            watermarks[(topic, partition)] = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
    if not watermarks:
        return {}
    probe.assign(
        [TopicPartition(t, p, max(high - 1, low)) for (t, p), (low, high) in watermarks.items()]
    )
    ends: dict[tuple[str, int], tuple[int, int]] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(watermarks) and time.monotonic() < deadline:
        message = probe.poll(0.2)
        if message is None or message.error() is None:
            continue
        if message.error().code() == KafkaError._PARTITION_EOF:
            key = (message.topic(), message.partition())
            ends[key] = (watermarks[key][0], message.offset())
    # A partition that never reported its end keeps the broker's answer.
    return {key: ends.get(key, value) for key, value in watermarks.items()}


def record_lag(lags: list[PartitionLag]) -> None:
    """Publish lag as the Prometheus gauges the health page and Grafana read."""
    for lag in lags:
        labels = (lag.group, lag.topic, str(lag.partition))
        CONSUMER_LAG.labels(*labels).set(lag.lag_messages)
        CONSUMER_LAG_SECONDS.labels(*labels).set(lag.lag_seconds)
