"""Events through Kafka into the Postgres catalog, side by side with a quixstreams application.

    python -m benchmarks.pipeline --events 50000

One isolated embedded stack (tansu + PostgreSQL 16) serves both. The same binary-mode
CloudEvents are produced once to the entity topics (for the DictaMesh catalog projector) and once
to a topic of their own (for quixstreams' PostgreSQLSink). Each side runs as deployed, in its own
processes (`dictamesh consume --sink catalog [--processes N] [--threads T]`; N quixstreams
applications in one group), started after its topic is full; the clock runs from the start
(imports and group join included) until every event is queryable in Postgres. Then each side
again with its consumers already running (joined and warmed up): a
producer process sends as many events again as fast as it can, and the clock runs from its first
record until the last is queryable. Over each span the CPU time of each side's processes, of the
broker and of Postgres is counted, which gives each side's CPU cost per event and the rate the
machine's cores could carry at that cost. Postgres is vacuumed and checkpointed, unmetered,
before each. Then the projector's event-to-queryable latency is measured at a steady rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg

from benchmarks.common import (
    CpuMeter,
    Machine,
    entity_events,
    isolated_stack,
    wait_until,
)
from workbench.events.consumer import PROGRESS_CHANNEL
from workbench.events.producer import EventProducer
from workbench.events.topics import TopicSpec, ensure_topics
from workbench.stack import Endpoints

QUIX_TOPIC = "bench.quix"
BATCH_SIZE = 5000  # records per transaction in the throughput run (DICTAMESH_CONSUMER_BATCH_SIZE)

QUIX_APP = """
import sys
from quixstreams import Application
from quixstreams.sinks.community.postgresql import PostgreSQLSink

bootstrap, host, port, dbname, user, password, topic_name, session_timeout, group = sys.argv[1:10]
app = Application(broker_address=bootstrap, consumer_group=group,
                  auto_offset_reset="earliest", loglevel="WARNING",
                  consumer_extra_config={"session.timeout.ms": int(session_timeout),
                                         "heartbeat.interval.ms": 500})
topic = app.topic(topic_name, value_deserializer="json")
sink = PostgreSQLSink(host=host, port=int(port), dbname=dbname, user=user, password=password,
                      table_name="quix_events", schema_auto_update=True)
app.dataframe(topic).sink(sink)
app.run()
"""


# The producing application of the burst run: it encodes its records first, sends a warm-up
# that makes the consumers join and connect, then on "go" sends the burst as fast as it can.
BURST_PRODUCER = """
import sys, time
from confluent_kafka import Producer
from benchmarks.common import entity_events

# destination: a topic, or ENTITY_TOPICS for the entity topic each event's type names
bootstrap, destination, warmup, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def records(number, system):
    encoded = []
    for topic, event in entity_events(number, source="/" + system, system=system):
        record = event.to_kafka()
        encoded.append((topic if destination == "ENTITY_TOPICS" else destination, record))
    return encoded

producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                     "batch.num.messages": 10000, "queue.buffering.max.messages": 500000})

def send(encoded):
    for topic, record in encoded:
        while True:
            try:
                producer.produce(topic, record.value, record.key, headers=record.headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        sys.exit("records left undelivered")

send(records(warmup, "burst-warmup"))
burst = records(count, "burst")
print("ready", flush=True)
sys.stdin.readline()
started, cpu = time.perf_counter(), time.process_time()
send(burst)
print(time.perf_counter() - started, time.process_time() - cpu, flush=True)
"""
WARMUP = 1000  # events the running consumers apply before the burst
ENTITY_TOPICS = "ENTITY_TOPICS"  # the burst producer's destination for the catalog projector
QUIX_GROUP = "quix-bench"
LOGGED_EVENTS = "SELECT count(*) FROM dictamesh_event_log"  # one row per applied event


class RowCounter:
    """Counts a table's rows over one connection, so the watching costs both sides little.

    A fresh connection per poll (a backend forked each time) and parallel workers for each count
    took about a third of a core from the two being measured.
    """

    def __init__(self, url: str, query: str) -> None:
        self.query = query
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET max_parallel_workers_per_gather = 0")
        self.backend = int(self.conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        self.last = 0

    def __call__(self) -> int:
        try:
            row = self.conn.execute(self.query).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        self.last = int(row[0]) if row else 0
        return self.last

    def close(self) -> None:
        self.conn.close()


def produce(endpoints: Endpoints, count: int) -> float:
    """Produce the events to both destinations; return the producer's events per second."""
    ensure_topics(endpoints.kafka_bootstrap, [TopicSpec(QUIX_TOPIC, 6)])
    producer = EventProducer(endpoints.kafka_bootstrap)
    started = time.perf_counter()
    for topic, event in entity_events(count):
        producer.publish(topic, event)
        producer.publish(QUIX_TOPIC, event)
    producer.flush(120)
    return 2 * count / (time.perf_counter() - started)


def _dictamesh_command(processes: int, threads: int) -> list[str]:
    """The projector as deployed: `dictamesh consume --sink catalog --processes N --threads T`."""
    command = [str(Path(sys.executable).with_name("dictamesh")), "consume", "--sink", "catalog"]
    return [*command, "--processes", str(processes), "--threads", str(threads)]


def settle(endpoints: Endpoints) -> None:
    """Vacuum, analyze and checkpoint, unmetered, so no phase pays for an earlier phase's rows."""
    with psycopg.connect(endpoints.postgres_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def _stop(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(60)


def _per_event(cpu_used: dict[str, float], count: int) -> dict[str, float]:
    return {f"cpu_us_{part}": 1e6 * seconds / count for part, seconds in cpu_used.items()}


def _timed_until_landed(
    endpoints: Endpoints, processes: list[subprocess.Popen[bytes]], query: str, count: int
) -> dict[str, float]:
    """From the consumers' start until `query` counts `count` rows; then stop them."""
    counter = RowCounter(endpoints.postgres_url, query)
    started = time.perf_counter()
    cpu = CpuMeter([process.pid for process in processes], counter.backend)
    try:
        first = wait_until(lambda: counter() > 0, 180)
        landed_first = counter.last  # the first apply's rows: not counted in the steady rate
        wait_until(lambda: counter() >= count, 1800)
        total = time.perf_counter() - started
        cpu_used = cpu.used()
    finally:
        counter.close()
        _stop(processes)
    return {
        "total_s": total,
        "first_s": first,
        "events_per_s": count / total,
        "steady_events_per_s": (count - landed_first) / (total - first),
        "extra_rows": counter.last - count,
        **_per_event(cpu_used, count),
    }


def _dictamesh_consumer(processes: int, threads: int) -> subprocess.Popen[bytes]:
    """The projector as deployed, with the throughput runs' batch size."""
    return subprocess.Popen(
        _dictamesh_command(processes, threads),
        env={**os.environ, "DICTAMESH_CONSUMER_BATCH_SIZE": str(BATCH_SIZE)},
        stdout=subprocess.DEVNULL,
    )


def run_dictamesh(
    endpoints: Endpoints, count: int, processes: int, threads: int = 1
) -> dict[str, float]:
    consumer = _dictamesh_consumer(processes, threads)
    return _timed_until_landed(endpoints, [consumer], LOGGED_EVENTS, count)


def run_quixstreams(endpoints: Endpoints, count: int, processes: int) -> dict[str, float]:
    consumers = _quix_processes(endpoints, processes)
    return _timed_until_landed(endpoints, consumers, "SELECT count(*) FROM quix_events", count)


def _quix_processes(endpoints: Endpoints, processes: int) -> list[subprocess.Popen[bytes]]:
    url = urlsplit(endpoints.postgres_url)
    args = [
        endpoints.kafka_bootstrap,
        url.hostname or "127.0.0.1",
        str(url.port),
        url.path.lstrip("/"),
        url.username or "postgres",
        url.password or "",
        QUIX_TOPIC,
        str(endpoints.group_session_timeout_ms),  # the group timeouts the projector gets
        QUIX_GROUP,
    ]
    return [
        subprocess.Popen(
            [sys.executable, "-c", QUIX_APP, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]


def _timed_burst(
    endpoints: Endpoints,
    consumers: list[subprocess.Popen[bytes]],
    destination: str,
    query: str,
    count: int,
) -> dict[str, float]:
    """With `consumers` running and warmed up, from the burst's first record to its last landed.

    The consumers of a group start together and the warm-up lands after their first join; the
    embedded broker does not list a group's members, so a later rebalance cannot be ruled out.
    """
    counter = RowCounter(endpoints.postgres_url, query)
    landed_before = counter()
    target = landed_before + WARMUP + count
    sizes = [str(WARMUP), str(count)]
    producer = subprocess.Popen(
        [sys.executable, "-c", BURST_PRODUCER, endpoints.kafka_bootstrap, destination, *sizes],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def landed(rows: int) -> bool:
        if producer.poll():  # exited with an error: its records will never all land
            raise RuntimeError(f"the burst producer failed (exit {producer.returncode})")
        return counter() >= rows

    try:
        if producer.stdout is None or producer.stdin is None:
            raise RuntimeError("the burst producer has no pipes")
        if producer.stdout.readline() != "ready\n":
            raise RuntimeError("the burst producer failed to start")
        wait_until(lambda: landed(landed_before + WARMUP), 180)
        settle(endpoints)
        cpu = CpuMeter([consumer.pid for consumer in consumers], counter.backend)
        started = time.perf_counter()
        producer.stdin.write("go\n")
        producer.stdin.flush()
        wait_until(lambda: landed(target), 1800)
        total = time.perf_counter() - started
        cpu_used = cpu.used()
        sent_in, producer_used = map(float, producer.stdout.readline().split())  # its own count
    finally:
        counter.close()
        _stop(consumers)
        if producer.poll() is None:
            producer.kill()
        producer.wait(60)
    return {
        "total_s": total,
        "events_per_s": count / total,
        "producer_events_per_s": count / sent_in,
        "cpu_us_producer": 1e6 * producer_used / count,
        "extra_rows": counter.last - target,
        **_per_event(cpu_used, count),
    }


def burst_dictamesh(
    endpoints: Endpoints, count: int, processes: int, threads: int = 1
) -> dict[str, float]:
    consumer = _dictamesh_consumer(processes, threads)
    return _timed_burst(endpoints, [consumer], ENTITY_TOPICS, LOGGED_EVENTS, count)


def burst_quixstreams(endpoints: Endpoints, count: int, processes: int) -> dict[str, float]:
    return _timed_burst(
        endpoints,
        _quix_processes(endpoints, processes),
        QUIX_TOPIC,
        "SELECT count(*) FROM quix_events",
        count,
    )


def latency_at_rate(endpoints: Endpoints, rate: int, seconds: float) -> dict[str, float]:
    """p50/p95/p99 from an event's creation to the moment a reader is told it is queryable.

    The projector runs as deployed: `dictamesh consume --sink catalog` in its own process, with
    its default settings. It resumes where the throughput run left it, so only new events flow.
    """
    projector = subprocess.Popen(
        [str(Path(sys.executable).with_name("dictamesh")), "consume", "--sink", "catalog"],
        stdout=subprocess.DEVNULL,
    )
    latencies: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        last_id = 0
        with psycopg.connect(endpoints.postgres_url, autocommit=True) as conn:
            conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.5, stop_after=1):
                    break
                seen = time.time()
                rows = conn.execute(
                    "SELECT id, extract(epoch FROM occurred_at) FROM dictamesh_event_log "
                    "WHERE id > %s AND event_source = '/latency' ORDER BY id",
                    (last_id,),
                ).fetchall()
                for row_id, occurred in rows:
                    latencies.append(seen - float(occurred))
                    last_id = max(last_id, row_id)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    producer = EventProducer(endpoints.kafka_bootstrap, postgres_url=endpoints.postgres_url)
    # Warm up until the group has joined, so the join is not counted as latency.
    for topic, event in entity_events(1, source="/warmup", system="warmup"):
        producer.publish(topic, event).wait(120)
    total = int(rate * seconds)
    started = time.perf_counter()
    events = entity_events(total, source="/latency", system="latency")
    for index, (topic, event) in enumerate(events):
        target = started + index / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.publish(topic, event.model_copy(update={"time": _now()}))
    producer.flush(60)
    wait_until(lambda: len(latencies) >= total, 300)
    stop.set()
    projector.terminate()  # SIGTERM: the projector finishes its batch and leaves the group
    projector.wait(60)
    watcher.join(10)
    ordered = sorted(latencies)
    return {
        "events": total,
        "rate": rate,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--processes", type=int, default=1, help="consumer processes on each side (same group)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="consumers per DictaMesh process (`--threads`)"
    )
    options = parser.parse_args()
    os.environ.setdefault("DICTAMESH_LOG_LEVEL", "WARNING")
    with isolated_stack() as endpoints:
        produced = produce(endpoints, options.events)
        settle(endpoints)
        ours = run_dictamesh(endpoints, options.events, options.processes, options.threads)
        settle(endpoints)
        theirs = run_quixstreams(endpoints, options.events, options.processes)
        ours_running = burst_dictamesh(
            endpoints, options.events, options.processes, options.threads
        )
        theirs_running = burst_quixstreams(endpoints, options.events, options.processes)
        settle(endpoints)
        latency = latency_at_rate(endpoints, options.rate, options.seconds)
    print(f"machine: {Machine.current().description}")
    print(f"producer: {produced:,.0f} events/s ({options.events:,} events to each destination)")
    print(f"consumer processes on each side: {options.processes}")
    print(f"consumers per DictaMesh process (--threads): {options.threads}")
    print(
        "| consumer | total s (join included) | first rows at s | events/s | "
        "events/s after first apply |"
    )
    print("|---|---|---|---|---|")
    for name, result in (
        ("DictaMesh catalog projector", ours),
        ("quixstreams PostgreSQLSink", theirs),
    ):
        print(
            f"| {name} | {result['total_s']:.2f} | {result['first_s']:.2f} | "
            f"{result['events_per_s']:,.0f} | {result['steady_events_per_s']:,.0f} |"
        )
    cores = psutil.cpu_count() or 1
    print(f"\nCPU per event during the run, in microseconds (all {cores} cores counted):")
    print("| consumer | consumer processes | broker | Postgres | total | events/s the CPU allows |")
    print("|---|---|---|---|---|---|")
    for name, result in (("DictaMesh", ours), ("quixstreams", theirs)):
        print(
            f"| {name} | {result['cpu_us_consumers']:.0f} | {result['cpu_us_broker']:.0f} | "
            f"{result['cpu_us_postgres']:.0f} | {result['cpu_us_total']:.0f} | "
            f"{cores * 1e6 / result['cpu_us_total']:,.0f} |"
        )
    print(
        f"ratio (DictaMesh / quixstreams, events/s): "
        f"{ours['events_per_s'] / theirs['events_per_s']:.2f}x"
    )
    print(
        f"\nConsumers running (joined and warmed up by {WARMUP:,} events) when a producer process "
        f"sends {options.events:,} events as fast as it can; from its first record to the last "
        "queryable (CPU per event in microseconds):"
    )
    print("| consumer | s | events/s | consumers | broker | Postgres | total | producer |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in (("DictaMesh", ours_running), ("quixstreams", theirs_running)):
        print(
            f"| {name} | {result['total_s']:.2f} | {result['events_per_s']:,.0f} | "
            f"{result['cpu_us_consumers']:.0f} | {result['cpu_us_broker']:.0f} | "
            f"{result['cpu_us_postgres']:.0f} | {result['cpu_us_total']:.0f} | "
            f"{result['cpu_us_producer']:.0f} |"
        )
    for name, result in (("DictaMesh", ours_running), ("quixstreams", theirs_running)):
        print(f"{name}: the producer sent at {result['producer_events_per_s']:,.0f} events/s")
    for name, result in (
        ("DictaMesh, started", ours),
        ("quixstreams, started", theirs),
        ("DictaMesh, running", ours_running),
        ("quixstreams, running", theirs_running),
    ):
        if result["extra_rows"]:
            print(f"{name}: {result['extra_rows']:,.0f} rows beyond the events (delivered twice)")
    print(
        f"ratio, consumers running (DictaMesh / quixstreams, events/s): "
        f"{ours_running['events_per_s'] / theirs_running['events_per_s']:.2f}x"
    )
    print(
        f"event-to-queryable at {latency['rate']:,} events/s over {latency['events']:,} events: "
        f"p50 {latency['p50_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms, "
        f"p99 {latency['p99_ms']:.0f} ms, max {latency['max_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
