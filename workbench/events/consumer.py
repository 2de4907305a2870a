"""The consumer runner: Kafka batches into a Postgres sink, exactly once.

Each batch is applied in one Postgres transaction that also stores the next offset of every
partition it covered (``dictamesh_consumer_offsets``). On start and on every rebalance the runner
seeks to the stored offsets, so a crash anywhere neither loses a record nor applies one twice; the
Kafka group commit that follows is only for outside tools. Records that are not valid events go to
the topic's dead-letter topic, with headers naming the reason, the original topic, partition and
offset and the exception, before the batch that skips them commits. Transient failures (Postgres
restarting, a lost connection) pause the partitions and retry with backoff.
"""

from __future__ import annotations

import collections
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from prometheus_client import Counter, Gauge, Histogram

from workbench.errors import DictaMeshError
from workbench.events.envelope import CloudEvent, InvalidEventError
from workbench.events.topics import dead_letter_topic
from workbench.observability import REGISTRY, get_logger
from workbench.stack import KAFKA_GROUP_SESSION_TIMEOUT_MS

log = get_logger(__name__)
P = TypeVar("P")

PROGRESS_CHANNEL = "dictamesh_progress"
MAX_EVENT_BYTES = 1_048_576

EVENTS_APPLIED = Counter(
    "dictamesh_events_applied_total",
    "Records a consumer group applied to its sink.",
    ["group", "topic"],
    registry=REGISTRY,
)
EVENTS_DEAD_LETTERED = Counter(
    "dictamesh_events_dead_lettered_total",
    "Records sent to a dead-letter topic.",
    ["group", "topic", "reason"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "dictamesh_consumer_batch_seconds",
    "Time to apply one batch, commit included.",
    ["group"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "dictamesh_consumer_lag_messages",
    "Records not yet applied, per partition.",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "dictamesh_consumer_lag_seconds",
    "Age of the newest applied record while behind, per partition.",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)


def record_time(message: Any) -> datetime | None:
    """The Kafka timestamp of a record as aware UTC, None when the record carries none."""
    kind, millis = message.timestamp()
    return datetime.fromtimestamp(millis / 1000, UTC) if kind and millis > 0 else None


def _next_offsets(messages: list[Any]) -> dict[tuple[str, int], tuple[int, datetime | None]]:
    """Per (topic, partition) of a batch: the offset after its last record, and its time."""
    last: dict[tuple[str, int], Any] = {}
    for message in messages:
        if message.error() is not None:
            continue
        key = (message.topic(), message.partition())
        if key not in last or message.offset() > last[key].offset():
            last[key] = message
    return {key: (message.offset() + 1, record_time(message)) for key, message in last.items()}


@dataclass(frozen=True)
class ConsumedEvent:
    """A CloudEvent with where it was read from."""

    event: CloudEvent
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None


class Sink(Protocol, Generic[P]):
    """What a consumer group keeps fresh.

    `prepare` is pure and runs in the runner's reader thread, overlapping the previous batch's
    `apply`; `apply` runs in the runner's thread, inside the batch's transaction.
    """

    group: str
    topics: Sequence[str]

    def prepare(self, consumed: ConsumedEvent) -> P:
        """Validate one record; raise `InvalidEventError` to dead-letter it."""
        ...

    def apply(
        self, conn: psycopg.Connection[Any], batch: Sequence[tuple[ConsumedEvent, P]]
    ) -> None:
        """Apply prepared records in order, inside the caller's transaction."""
        ...


@dataclass
class _Poison:
    message: Any
    reason: str
    error: Exception

    @property
    def description(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"[:2000]


@dataclass
class _Decoded(Generic[P]):
    """One polled batch, read and prepared, waiting for its transaction."""

    messages: list[Any]
    good: list[tuple[Any, ConsumedEvent, P]]
    poison: list[_Poison]
    started: float


@dataclass
class RunnerConfig:
    bootstrap: str
    postgres_url: str
    batch_size: int = 500
    poll_timeout: float = 0.2
    session_timeout_ms: int = KAFKA_GROUP_SESSION_TIMEOUT_MS  # safe on any broker
    heartbeat_interval_ms: int = 500
    max_backoff: float = 5.0
    # Start an empty Kafka group afresh (see `forget_empty_group`); off for processes started
    # together by one supervisor, which resets the group once before starting them.
    reset_empty_group: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


GARBAGE_INTERVAL = 30.0  # seconds between the runner's own collections when automatic GC is off


def collect_garbage_between_batches() -> None:
    """For processes that only run consumers: no cyclic collections in the middle of a batch.

    A batch makes tens of thousands of short-lived objects, freed by reference counting; the
    automatic collector walked them again and again and took a fifth of the projector's Python
    time. With it off, each runner collects between batches every `GARBAGE_INTERVAL` seconds,
    and the objects made at start-up (modules, settings) are frozen out of those collections.
    """
    gc.freeze()
    gc.disable()


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the database blinked, or a sink says its failure is transient."""
    if isinstance(exc, DictaMeshError):
        return exc.transient
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected
        | psycopg.errors.AdminShutdown,
    )


def forget_empty_group(bootstrap: str, group: str) -> None:
    """Delete the Kafka group if it is empty, so the next member starts a fresh one.

    The embedded broker can keep a departed member as an empty group's leader after a
    multi-member group stops; a consumer joining later then never gets its partitions. An empty
    group holds nothing the runners need (their offsets live in Postgres; Kafka only gets a
    courtesy copy). Only an EMPTY group is deleted: the embedded broker lists no members even
    for a stable group, so its state is what tells.
    """
    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        if described.state != ConsumerGroupState.EMPTY:
            return
        admin.delete_consumer_groups([group], request_timeout=10)[group].result()
        log.debug("empty consumer group reset", group=group)
    except KafkaException as exc:  # a broker without these APIs: join the group as it is
        log.debug("consumer group not reset", group=group, error=str(exc)[:200])


class ConsumerRunner(Generic[P]):
    """Runs one sink's consumer group until `stop()` (or SIGTERM when run in the main thread)."""

    def __init__(self, sink: Sink[P], config: RunnerConfig) -> None:
        from confluent_kafka import Consumer, Producer

        self.sink = sink
        self.config = config
        self._stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.consumer = Consumer(
            {
                "bootstrap.servers": config.bootstrap,
                "group.id": sink.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": config.session_timeout_ms,
                "heartbeat.interval.ms": config.heartbeat_interval_ms,
                "enable.partition.eof": False,
                "log_level": 3,
                **config.extra,
            }
        )
        self.dead_letters = Producer(
            {
                "bootstrap.servers": config.bootstrap,
                "enable.idempotence": True,
                "message.max.bytes": 16 * MAX_EVENT_BYTES,
                "log_level": 3,
            }
        )
        self.applied = 0
        self.dead_lettered = 0
        self._pending: _Decoded[P] | None = None
        self._collected_at = time.monotonic()
        self._joined = False

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.sink.group

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def join_group(self) -> None:
        """Subscribe (once), so the broker forms the group while the process does other work.

        Partitions are assigned, and their stored offsets read, only once `run` polls.
        """
        if self._joined:
            return
        if self.config.reset_empty_group:
            forget_empty_group(self.config.bootstrap, self.sink.group)
        self.consumer.subscribe(
            list(self.sink.topics), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        self._joined = True
        log.info("consumer started", group=self.sink.group, topics=list(self.sink.topics))

    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Consume until stopped; `until` is checked after every poll (tests use it)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self.join_group()
        # Reading and preparing a batch is Python work; applying one is mostly waiting on
        # Postgres. Overlapping the two keeps both cores busy: batch N+1 is read in this
        # thread-pool worker while batch N commits here. Commits stay in order, one at a time.
        reader = ThreadPoolExecutor(1, thread_name_prefix=f"read-{self.sink.group}")
        try:
            while not self.stopping and not (until and until()):
                waiting = 0.0 if self._pending is not None else self.config.poll_timeout
                messages = self.consumer.consume(self.config.batch_size, waiting)
                reading = reader.submit(self._read, messages) if messages else None
                self._apply_pending()
                if reading is not None:
                    self._pending = reading.result()
                self._collect_garbage()
            self._apply_pending()
        finally:
            reader.shutdown()
            self.consumer.close()
            self.dead_letters.flush(10)
            self.dead_letters = None  # type: ignore[assignment]  # release the client now
            if self._conn is not None:
                self._conn.close()
            log.info(
                "consumer stopped",
                group=self.sink.group,
                applied=self.applied,
                dead_lettered=self.dead_lettered,
            )

    def _collect_garbage(self) -> None:
        """Between batches, when the process turned automatic collection off."""
        if gc.isenabled() or time.monotonic() - self._collected_at < GARBAGE_INTERVAL:
            return
        gc.collect()
        self._collected_at = time.monotonic()

    # -- offsets live with the sink ----------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.config.postgres_url, connect_timeout=5)
            # The offsets commit with the rows, so a commit lost in a database crash is lost
            # with its offsets and simply applied again: waiting for the WAL flush buys nothing.
            self._conn.execute("SET synchronous_commit = off")
            self._conn.commit()
        return self._conn

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._apply_pending()
        from confluent_kafka import OFFSET_BEGINNING

        stored = self._with_retry(lambda: self._stored_offsets({p.topic for p in partitions}))
        for partition in partitions:
            # The stored offsets are the truth. Kafka's committed position may run ahead of
            # them (a batch read but not yet applied), so it is never used: a partition with
            # nothing stored starts from the beginning.
            next_offset = stored.get((partition.topic, partition.partition))
            partition.offset = OFFSET_BEGINNING if next_offset is None else next_offset
        consumer.assign(partitions)
        log.debug("partitions assigned", group=self.sink.group, partitions=len(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """Commit what was read before the partitions go, so their next owner starts after it."""
        self._apply_pending()

    def _stored_offsets(self, topics: Iterable[str]) -> dict[tuple[str, int], int]:
        conn = self._connection()
        with conn.transaction():
            rows = conn.execute(
                "SELECT topic, kafka_partition, next_offset FROM dictamesh_consumer_offsets "
                "WHERE group_id = %s AND topic = ANY(%s)",
                (self.sink.group, list(topics)),
            ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    # -- one batch ----------------------------------------------------------------------------
    def _read(self, messages: list[Any]) -> _Decoded[P]:
        """Decode and prepare a batch (pure work, in the reader thread)."""
        started = time.perf_counter()
        good: list[tuple[Any, ConsumedEvent, P]] = []
        poison: list[_Poison] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise RuntimeError(f"Kafka consumer failed: {error}")
                log.warning("consumer error", group=self.sink.group, error=str(error))
                continue
            try:
                consumed = self._decode(message)
                good.append((message, consumed, self.sink.prepare(consumed)))
            except InvalidEventError as exc:
                poison.append(_Poison(message, exc.reason, exc))
            except Exception as exc:  # a record nobody foresaw must not stop its partition
                poison.append(_Poison(message, "unreadable", exc))
        return _Decoded(messages, good, poison, started)

    def _apply_pending(self) -> None:
        """Dead-letter the poison of the batch read last, then apply the rest with its offsets."""
        batch, self._pending = self._pending, None
        if batch is None:
            return
        self._dead_letter(batch.poison)
        rejected = self._with_retry(lambda: self._commit(batch.good, batch.messages, batch.poison))
        self._commit_kafka(batch.messages)
        self.applied += len(batch.good) - len(rejected)
        BATCH_SECONDS.labels(self.sink.group).observe(time.perf_counter() - batch.started)

    def _decode(self, message: Any) -> ConsumedEvent:
        value = message.value()
        if value is not None and len(value) > MAX_EVENT_BYTES:
            raise InvalidEventError(
                "payload-too-large",
                f"The record is {len(value):,} bytes; events are limited to {MAX_EVENT_BYTES:,}.",
            )
        stamped = record_time(message)
        event = CloudEvent.from_kafka(value, message.headers(), message.key(), received=stamped)
        return ConsumedEvent(event, message.topic(), message.partition(), message.offset(), stamped)

    def _commit(
        self, good: list[tuple[Any, ConsumedEvent, P]], messages: list[Any], poison: list[_Poison]
    ) -> list[_Poison]:
        """Apply the batch and its offsets in one transaction; return records that poisoned it.

        Records the sink refuses are dead-lettered before the transaction that skips them
        commits, so a crash in between leaves them to be read again rather than lost.
        """
        conn = self._connection()
        rejected: list[_Poison] = []
        with conn.transaction():
            try:
                with conn.transaction():  # savepoint: a bad record must not sink its batch
                    self.sink.apply(conn, [(c, p) for _, c, p in good])
            except Exception as exc:
                if _transient(exc):
                    raise
                rejected = self._apply_one_by_one(conn, good)
                self._dead_letter(rejected)
            self._record_dead_letters(conn, [*poison, *rejected])
            self._store_offsets(conn, messages)
            conn.execute("SELECT pg_notify(%s, %s)", (PROGRESS_CHANNEL, self.sink.group))
        refused = {id(r.message) for r in rejected}
        applied = collections.Counter(c.topic for m, c, _ in good if id(m) not in refused)
        for topic, count in applied.items():
            EVENTS_APPLIED.labels(self.sink.group, topic).inc(count)
        return rejected

    def _apply_one_by_one(
        self, conn: psycopg.Connection[Any], good: list[tuple[Any, ConsumedEvent, P]]
    ) -> list[_Poison]:
        rejected = []
        for message, consumed, prepared in good:
            try:
                with conn.transaction():
                    self.sink.apply(conn, [(consumed, prepared)])
            except Exception as exc:  # whatever the sink refuses, the rest goes on
                if _transient(exc):
                    raise
                rejected.append(_Poison(message, "sink-rejected", exc))
        return rejected

    def _record_dead_letters(self, conn: psycopg.Connection[Any], sent: list[_Poison]) -> None:
        """Which positions were dead-lettered, not applied: what `PublishHandle.wait` checks."""
        if not sent:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO dictamesh_dead_lettered "
                "(group_id, topic, kafka_partition, kafka_offset, reason, error) "
                "VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (group_id, topic, kafka_partition, kafka_offset) "
                "DO UPDATE SET reason = EXCLUDED.reason, error = EXCLUDED.error",
                [
                    (
                        self.sink.group,
                        item.message.topic(),
                        item.message.partition(),
                        item.message.offset(),
                        item.reason,
                        item.description,
                    )
                    for item in sent
                ],
            )

    def _store_offsets(self, conn: psycopg.Connection[Any], messages: list[Any]) -> None:
        latest = _next_offsets(messages)
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO dictamesh_consumer_offsets AS o "
                "(group_id, topic, kafka_partition, next_offset, last_event_time, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (group_id, topic, kafka_partition) "
                "DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), "
                "last_event_time = EXCLUDED.last_event_time, updated_at = now()",
                [
                    (self.sink.group, topic, partition, offset, stamp)
                    for (topic, partition), (offset, stamp) in latest.items()
                ],
            )

    def _commit_kafka(self, messages: list[Any]) -> None:
        """Tell Kafka what this batch applied (for outside tools), not the read position."""
        from confluent_kafka import KafkaException, TopicPartition

        applied = _next_offsets(messages)
        if not applied:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), (o, _) in applied.items()],
                asynchronous=True,
            )
        except KafkaException as exc:  # the stored offsets are the truth; this is a courtesy
            log.debug("kafka offset commit skipped", error=str(exc), count=len(messages))

    # -- dead letters -------------------------------------------------------------------------
    def _dead_letter(self, poison: list[_Poison]) -> None:
        if not poison:
            return
        for item in poison:
            message = item.message
            headers = list(message.headers() or [])
            headers += [
                ("dlq_reason", item.reason.encode()),
                ("dlq_original_topic", message.topic().encode()),
                ("dlq_original_partition", str(message.partition()).encode()),
                ("dlq_original_offset", str(message.offset()).encode()),
                ("dlq_exception", item.description.encode()),
                ("dlq_consumer_group", self.sink.group.encode()),
            ]
            self.dead_letters.produce(
                dead_letter_topic(message.topic()),
                value=message.value(),
                key=message.key(),
                headers=headers,
            )
            EVENTS_DEAD_LETTERED.labels(self.sink.group, message.topic(), item.reason).inc()
            log.warning(
                "dead-lettered record",
                group=self.sink.group,
                topic=message.topic(),
                partition=message.partition(),
                offset=message.offset(),
                reason=item.reason,
            )
        remaining = self.dead_letters.flush(30)
        if remaining:
            raise RuntimeError(
                f"{remaining} dead-letter records were not delivered; not committing"
            )
        self.dead_lettered += len(poison)

    # -- retries ------------------------------------------------------------------------------
    def _with_retry(self, action: Callable[[], Any]) -> Any:
        delay = 0.1
        while True:
            try:
                return action()
            except (psycopg.Error, DictaMeshError) as exc:
                if not _transient(exc) or self.stopping:
                    raise
                log.warning(
                    "sink unavailable, retrying",
                    group=self.sink.group,
                    error=str(exc).strip()[:200],
                    retry_in=delay,
                )
                if self._conn is not None:
                    self._conn.close()
                self._pause_while(delay)
                delay = min(delay * 2, self.config.max_backoff)

    def _pause_while(self, seconds: float) -> None:
        """Wait without leaving the group: partitions paused, polls keep the session alive."""
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping:
            self.consumer.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        if assignment:
            self.consumer.resume(assignment)
