"""What an event must cost on this machine, whatever the consumer: the pipeline's CPU floor.

    python -m benchmarks.pipeline_floor --events 100000

The issue's 20,000 events/s on two cores leaves 100 us of CPU per event for everything. This
measures, one part at a time on one embedded stack, the parts no catalog projector can skip:

1. reading the records: a bare confluent-kafka consumer (its own process, partitions assigned,
   no group) that touches each record's value and headers and drops it; its CPU and the
   broker's per event;
2. the rows the catalog must hold (issue point 5: the entity row with its search vector, the
   immutable event-log row with before and after state, the cache-status row), written by the
   projector itself from memory in batches of 5,000, one transaction each; Postgres' CPU per
   event, and the projector's Python (planning, formatting, libpq) apart; then each table's
   rows alone, to show where Postgres' part goes;

and, for comparison, what the workbench adds to reading (decoding and validating each record
into an entity change, in the same kind of process) and what Postgres spends on one unindexed
row per event (what quixstreams' PostgreSQLSink writes). The floor is (1) plus Postgres' part of
(2): the CPU of an event with no Python work between the Kafka client and the database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg

from benchmarks.common import (
    Machine,
    component_pid,
    entity_events,
    isolated_stack,
    tree_cpu_seconds,
)
from workbench.catalog.projector import (
    _CACHE_COLUMNS,
    _ENTITY_COLUMNS,
    _LOG_COLUMNS,
    CatalogProjector,
    _BatchPlan,
    _copy_lines,
    _new_cache_line,
    copy_json,
    copy_line,
    copy_text,
)
from workbench.events import topics
from workbench.events.consumer import ConsumedEvent
from workbench.events.envelope import CloudEvent
from workbench.events.producer import EventProducer
from workbench.stack import Endpoints

BATCH = 5000

# Run in a process of its own so its CPU is its own. "bare" only touches each record; "decode"
# also does what the projector's reader thread does with it.
READER = """
import json, sys, time
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

bootstrap, names, count, mode = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
if mode == "decode":
    from workbench.catalog.projector import parse_change
    from workbench.events.consumer import ConsumedEvent
    from workbench.events.envelope import CloudEvent
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "floor-unused",
                     "enable.auto.commit": False, "fetch.max.bytes": 52428800})
metadata = consumer.list_topics(timeout=30)
consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING)
                 for name in names for p in metadata.topics[name].partitions])
# CPU from here, as the client starts fetching; the clock from the first record, so waiting
# for the first fetch is not counted as reading.
seen, cpu, wall = 0, time.process_time(), None
while seen < count:
    messages = consumer.consume(num_messages=5000, timeout=1.0)
    if messages and wall is None:
        wall = time.perf_counter()
    for message in messages:
        value, headers = message.value(), message.headers()
        if mode == "decode":
            event = CloudEvent.from_kafka(value, headers, message.key(), received=None)
            parse_change(ConsumedEvent(event, message.topic(), message.partition(),
                                       message.offset(), None))
    seen += len(messages)
print(json.dumps({"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}))
consumer.close()
"""


def produce(endpoints: Endpoints, count: int) -> None:
    producer = EventProducer(endpoints.kafka_bootstrap)
    for topic, event in entity_events(count):
        producer.publish(topic, event)
    producer.flush(120)


def read(endpoints: Endpoints, count: int, mode: str) -> dict[str, float]:
    """CPU per event of a reader process (from its first record) and of the broker meanwhile."""
    broker = component_pid("broker")
    broker_before = tree_cpu_seconds(broker)
    names = ",".join(topics.ENTITY_TOPICS)
    output = subprocess.run(
        [sys.executable, "-c", READER, endpoints.kafka_bootstrap, names, str(count), mode],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    return {
        "reader_us": 1e6 * measured["cpu_s"] / count,
        "broker_us": 1e6 * (tree_cpu_seconds(broker) - broker_before) / count,
        "events_per_s": count / measured["wall_s"],
    }


def _batches(count: int, system: str = "floor") -> Iterator[list[tuple[ConsumedEvent, Any]]]:
    projector = CatalogProjector()
    batch: list[tuple[ConsumedEvent, Any]] = []
    events = entity_events(count, source=f"/{system}", system=system)
    for offset, (topic, event) in enumerate(events):
        consumed = ConsumedEvent(event, topic, 0, offset, None)
        batch.append((consumed, projector.prepare(consumed)))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write_catalog(endpoints: Endpoints, count: int) -> dict[str, float]:
    """Postgres' CPU and the projector's Python CPU per event for the catalog's rows."""
    batches = list(_batches(count))  # decoded before the clock starts
    postgres = component_pid("postgres")
    with psycopg.connect(endpoints.postgres_url) as conn:
        conn.execute("SET synchronous_commit = off")  # as the consumer runner sets it
        conn.commit()
        projector = CatalogProjector()
        postgres_before, python_before = tree_cpu_seconds(postgres), time.thread_time()
        started = time.perf_counter()
        for batch in batches:
            with conn.transaction():
                projector.apply(conn, batch)
        wall = time.perf_counter() - started
        python = time.thread_time() - python_before
        postgres_used = tree_cpu_seconds(postgres) - postgres_before
    return {
        "postgres_us": 1e6 * postgres_used / count,
        "python_us": 1e6 * python / count,
        "events_per_s": count / wall,
    }


def write_tables(endpoints: Endpoints, count: int) -> dict[str, float]:
    """Postgres' CPU per event for each catalog table's rows alone (COPY of new entities' rows).

    Another `count` entities, after `write_catalog`'s: each table is as large as it is there.
    """
    plans = []
    for batch in _batches(count, system="floor-tables"):
        plan = _BatchPlan(set())
        for consumed, prepared in batch:
            plan.add(consumed, prepared, {})
        plans.append(plan)
    parts = {
        "entity": (f"dictamesh_entity_catalog ({_ENTITY_COLUMNS})", lambda p: p.entities.values()),
        "event log": (f"dictamesh_event_log ({_LOG_COLUMNS})", lambda p: p.log),
        "cache status": (
            f"dictamesh_cache_status ({_CACHE_COLUMNS})",
            lambda p: [_new_cache_line(*latest) for latest in p.latest.values()],
        ),
    }
    postgres = component_pid("postgres")
    used = {}
    with psycopg.connect(endpoints.postgres_url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        for name, (target, lines) in parts.items():
            before = tree_cpu_seconds(postgres)
            for plan in plans:
                with conn.transaction(), conn.cursor() as cursor:
                    _copy_lines(cursor, target, list(lines(plan)))
            used[name] = 1e6 * (tree_cpu_seconds(postgres) - before) / count
    return used


def write_unindexed(endpoints: Endpoints, count: int) -> dict[str, float]:
    """Postgres' CPU per event for one unindexed row (the columns quixstreams' sink makes)."""
    lines = [_sink_line(topic, event) for topic, event in entity_events(count, system="sink")]
    postgres = component_pid("postgres")
    with psycopg.connect(endpoints.postgres_url) as conn:
        conn.execute(
            "CREATE TABLE floor_sink (timestamp timestamptz, __key text, domain text, "
            "source_system text, entity_type text, source_id text, version bigint, "
            "attributes jsonb)"
        )
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        before = tree_cpu_seconds(postgres)
        with conn.cursor() as cursor:
            for start in range(0, count, BATCH):
                _copy_lines(cursor, "floor_sink", lines[start : start + BATCH])
                conn.commit()
        used = tree_cpu_seconds(postgres) - before
    return {"postgres_us": 1e6 * used / count}


def _sink_line(topic: str, event: CloudEvent) -> str:
    data = event.data
    return copy_line(
        event.time.isoformat(),
        copy_text(event.partitionkey),
        copy_text(data["domain"]),
        copy_text(data["source_system"]),
        copy_text(data["entity_type"]),
        copy_text(data["source_id"]),
        str(data["version"]),
        copy_json(data["attributes"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    options = parser.parse_args()
    count = options.events
    os.environ.setdefault("DICTAMESH_LOG_LEVEL", "WARNING")
    with isolated_stack() as endpoints:
        produce(endpoints, count)
        bare = read(endpoints, count, "bare")
        decoded = read(endpoints, count, "decode")
        catalog = write_catalog(endpoints, count)
        tables = write_tables(endpoints, count)
        unindexed = write_unindexed(endpoints, count)
    cores = psutil.cpu_count() or 1
    floor = bare["reader_us"] + bare["broker_us"] + catalog["postgres_us"]
    print(f"machine: {Machine.current().description}; {count:,} events, batches of {BATCH:,}")
    print("| part | CPU us per event | alone, events/s |")
    print("|---|---|---|")
    rows = [
        ("read, bare consumer process", bare["reader_us"], bare["events_per_s"]),
        ("read, broker", bare["broker_us"], None),
        ("read and decode as the projector does", decoded["reader_us"], decoded["events_per_s"]),
        ("catalog rows, Postgres", catalog["postgres_us"], catalog["events_per_s"]),
        ("catalog rows, projector Python", catalog["python_us"], None),
        *((f"- {name} rows alone, Postgres", cost, None) for name, cost in tables.items()),
        ("one unindexed row, Postgres", unindexed["postgres_us"], None),
    ]
    for name, cost, rate in rows:
        print(f"| {name} | {cost:.1f} | {'' if rate is None else f'{rate:,.0f}'} |")
    print(
        f"floor (bare read + broker + catalog rows in Postgres): {floor:.1f} us per event; "
        f"{cores} cores allow at most {cores * 1e6 / floor:,.0f} events/s"
    )
    with_ours = floor + decoded["reader_us"] - bare["reader_us"] + catalog["python_us"]
    print(
        f"with the projector's Python (decode, plan, format): {with_ours:.1f} us per event; "
        f"{cores * 1e6 / with_ours:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
