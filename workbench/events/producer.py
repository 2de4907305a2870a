"""The event producer: idempotent, keyed, batched; handles that wait for the projection.

`publish` queues a record and returns a `PublishHandle` at once (librdkafka batches in the
background). ``handle.delivered()`` waits for the broker's acknowledgement and raises when delivery
failed; ``handle.wait()`` also waits until a consumer group (by default the catalog projection) has
applied the record, so a notebook user can read their own write.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from workbench.errors import ComponentUnavailableError, TerminalError, TransientError
from workbench.events.consumer import PROGRESS_CHANNEL
from workbench.events.envelope import CloudEvent, ContentMode


class DeliveryError(TransientError):
    """The broker did not accept a record."""


class ProjectionTimeout(TransientError):
    """A record was delivered but not applied within the wait."""


class EventRejected(TerminalError):
    """The consumer group read the record and dead-lettered it instead of applying it."""


@dataclass
class PublishHandle:
    """Where a published record landed, once the broker has said so."""

    producer: EventProducer
    topic: str
    event: CloudEvent
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    partition: int | None = None
    offset: int | None = None
    error: str | None = None

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.error = str(error)
            self.producer.undelivered.append(self)
        else:
            self.partition, self.offset = message.partition(), message.offset()
        self._done.set()

    def delivered(self, timeout: float = 30.0) -> PublishHandle:
        """Block until the broker acknowledged the record; raise `DeliveryError` if it failed."""
        deadline = time.monotonic() + timeout
        while not self._done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeliveryError(
                    f"Event {self.event.id} to {self.topic} not acknowledged in {timeout:.0f} s.",
                    remedy="check the broker with `dictamesh status`.",
                )
            self.producer.poll(min(remaining, 0.1))
        if self.error is not None:
            # Reported here, so not again by flush.
            self.producer.undelivered = [h for h in self.producer.undelivered if h is not self]
            raise DeliveryError(
                f"Event {self.event.id} to {self.topic} was not delivered: {self.error}.",
                remedy="check the broker with `dictamesh status`; the event was not published.",
            )
        return self

    def position(self) -> tuple[int, int]:
        """Partition and offset of the delivered record."""
        if self.partition is None or self.offset is None:
            raise DeliveryError(
                f"Event {self.event.id} has not been delivered yet.",
                remedy="call .delivered() first.",
            )
        return self.partition, self.offset

    def wait(self, timeout: float = 30.0, *, group: str | None = None) -> PublishHandle:
        """Block until `group` (default: the catalog projection) has applied this record.

        Raises `EventRejected` when the group dead-lettered it, `ProjectionTimeout` after `timeout`.
        """
        from workbench.catalog.projector import GROUP

        started = time.monotonic()
        self.delivered(timeout)
        if self.producer.postgres_url is None:
            raise TerminalError(
                "This producer does not know the catalog database, so it cannot wait for the "
                "projection.",
                remedy="create it with postgres_url=..., or use wb.events.",
            )
        partition, offset = self.position()
        wait_for_offset(
            self.producer.postgres_url,
            group or GROUP,
            self.topic,
            partition,
            offset,
            timeout - (time.monotonic() - started),
        )
        return self


def wait_for_offset(
    postgres_url: str, group: str, topic: str, partition: int, offset: int, timeout: float
) -> None:
    """Return once `group` has applied `offset` of `topic`/`partition` (notified, not polled)."""
    deadline = time.monotonic() + max(timeout, 0.0)
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"LISTEN {PROGRESS_CHANNEL}")
        while True:
            row = conn.execute(
                "SELECT next_offset FROM dictamesh_consumer_offsets "
                "WHERE group_id = %s AND topic = %s AND kafka_partition = %s",
                (group, topic, partition),
            ).fetchone()
            if row is not None and row[0] > offset:
                _raise_if_dead_lettered(conn, group, [(topic, partition, offset)])
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProjectionTimeout(
                    f"{group} has not applied {topic}[{partition}]@{offset} in {timeout:.1f} s.",
                    remedy="is a consumer running? `dictamesh consume` (or `dictamesh serve`) runs "
                    "the projectors; see lag on the Health page.",
                )
            for _notice in conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                break


def _raise_if_dead_lettered(
    conn: psycopg.Connection[Any], group: str, positions: list[tuple[str, int, int]]
) -> None:
    """Raise `EventRejected` naming the records at `positions` that `group` dead-lettered."""
    rows = conn.execute(
        "SELECT topic, kafka_partition, kafka_offset, reason, error FROM dictamesh_dead_lettered "
        "WHERE group_id = %s AND (topic, kafka_partition, kafka_offset) IN "
        "(SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[])) "
        "ORDER BY topic, kafka_partition, kafka_offset",
        (
            group,
            [topic for topic, _, _ in positions],
            [partition for _, partition, _ in positions],
            [offset for _, _, offset in positions],
        ),
    ).fetchall()
    if not rows:
        return
    topic, partition, offset, reason, error = rows[0]
    more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
    raise EventRejected(
        f"{group} did not apply {topic}[{partition}]@{offset}{more}: it was dead-lettered "
        f"({reason}: {error}).",
        remedy="fix the event and publish it again; wb.events.dead_letters() lists what was "
        "sent away and why.",
    )


def wait_for_all(
    handles: list[PublishHandle], timeout: float = 60.0, group: str | None = None
) -> None:
    """Wait until every handle's record is applied: one wait per partition, at its last offset.

    Raises `EventRejected` when the group dead-lettered any of them.
    """
    from workbench.catalog.projector import GROUP

    if not handles:
        return
    started = time.monotonic()
    newest: dict[tuple[str, int], PublishHandle] = {}
    for handle in handles:
        partition, offset = handle.delivered(timeout).position()
        key = (handle.topic, partition)
        if key not in newest or newest[key].position()[1] < offset:
            newest[key] = handle
    url = handles[0].producer.postgres_url
    if url is None:
        raise TerminalError("The producer does not know the catalog database.")
    for (topic, partition), handle in newest.items():
        wait_for_offset(
            url,
            group or GROUP,
            topic,
            partition,
            handle.position()[1],
            timeout - (time.monotonic() - started),
        )
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        positions = [(h.topic, *h.position()) for h in handles]
        _raise_if_dead_lettered(conn, group or GROUP, positions)


class InvalidPayloadError(TerminalError):
    """An event's data does not fit its topic; nothing was published."""


class SubjectSchemas:
    """The newest JSON Schema of each subject, compiled once and read again after `ttl` seconds.

    A new schema version reaches a running producer within `ttl`, and publishing many events
    under one subject reads the registry once per `ttl`.
    """

    def __init__(self, postgres_url: str | None, ttl: float = 5.0) -> None:
        self.postgres_url = postgres_url
        self.ttl = ttl
        self._known: dict[str, tuple[float, int, Any]] = {}  # subject: read at, version, check
        self._engine: Any = None

    def close(self) -> None:
        """Return the registry's database connections; a later check opens them again."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def problem(self, subject: str, attributes: dict[str, Any]) -> str | None:
        """What in `attributes` breaks the subject's newest schema, or None."""
        version, validator = self._validator(subject)
        import jsonschema  # type: ignore[import-untyped]

        error = jsonschema.exceptions.best_match(validator.iter_errors(attributes))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        return f"attributes/{where} breaks schema {subject!r} version {version}: {error.message}"

    def _validator(self, subject: str) -> tuple[int, Any]:
        known = self._known.get(subject)
        if known is not None and time.monotonic() - known[0] < self.ttl:
            return known[1], known[2]
        if self.postgres_url is None:
            raise InvalidPayloadError(
                f"Attributes cannot be checked against schema {subject!r}: this producer has no "
                "catalog database.",
                remedy="create the producer with postgres_url=, or publish through wb.catalog.",
            )
        import json

        import jsonschema

        from workbench import db
        from workbench.catalog.schemas import SchemaRegistry

        if self._engine is None:
            self._engine = db.make_engine(self.postgres_url)
        registered = SchemaRegistry(self._engine).get(subject)
        if registered.schema_format != "JSON":
            raise InvalidPayloadError(
                f"Subject {subject!r} is {registered.schema_format}; attributes are checked "
                "against JSON Schema subjects only.",
                remedy="register a JSON Schema for the entity's attributes.",
            )
        schema = json.loads(registered.definition)
        validator = jsonschema.validators.validator_for(schema)(schema)
        self._known[subject] = (time.monotonic(), registered.version, validator)
        return registered.version, validator


def _entity_checked(topic: str, event: CloudEvent, schemas: SubjectSchemas) -> CloudEvent:
    """The event as sent: an entity event carries a valid entity change and is keyed by entity.

    The projection would dead-letter an entity event without a change; attributes must fit
    the schema subject the change names; without a key, an entity's versions would spread over
    partitions and arrive out of order.
    """
    from workbench.events import topics

    if topic not in topics.ENTITY_TOPICS:
        return event
    from workbench.catalog.model import entity_change
    from workbench.events.envelope import InvalidEventError

    try:
        change = entity_change(event)
    except InvalidEventError as exc:
        raise InvalidPayloadError(
            f"Not published to {topic}: {exc.message}",
            remedy="give the event's data the fields of an entity change (domain, "
            "source_system, entity_type, source_id, version, attributes).",
        ) from None
    if change.schema_subject is not None:
        problem = schemas.problem(change.schema_subject, change.attributes)
        if problem is not None:
            raise InvalidPayloadError(
                f"Not published to {topic}: {problem}.",
                remedy="fix the value, or register a new schema version; nothing was published.",
            )
    if event.partitionkey is None:
        return event.model_copy(update={"partitionkey": change.ref.key})
    return event


class EventProducer:
    """Publishes CloudEvents to Kafka (binary mode by default), keyed by `partitionkey`."""

    def __init__(
        self,
        bootstrap: str,
        *,
        postgres_url: str | None = None,
        mode: ContentMode = "binary",
        config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.postgres_url = postgres_url
        self.mode = mode
        self.schemas = SubjectSchemas(postgres_url)
        # Handles whose delivery failed since the last flush: flush raises with them.
        self.undelivered: list[PublishHandle] = []
        # Orders each produce against close's swap: an event is either queued before close
        # flushes (and so delivered) or refused as closed, never queued into a dropped client.
        self._lock = threading.Lock()
        self._closed = False
        self._producer: Any = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # acks=all, ordered, no duplicates on retry
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                "log_level": 3,
                **(config or {}),
            }
        )

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"EventProducer(bootstrap={self.bootstrap!r}, mode={self.mode!r}{state})"

    def _closed_error(self) -> TerminalError:
        return TerminalError(
            f"This producer for {self.bootstrap} is closed.",
            remedy="create a new EventProducer (a closed Workbench makes one on next use).",
        )

    def publish(self, topic: str, event: CloudEvent) -> PublishHandle:
        """Queue one event; the handle reports delivery and projection."""
        from confluent_kafka import KafkaException

        if self._closed:  # refused before the event is checked against its schema
            raise self._closed_error()
        event = _entity_checked(topic, event, self.schemas)
        record = event.to_kafka(self.mode)
        handle = PublishHandle(self, topic, event)
        while True:
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                client = self._producer
                try:
                    client.produce(
                        topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        on_delivery=handle._delivered,
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    pass
                except KafkaException as exc:
                    raise DeliveryError(
                        f"Event {event.id} to {topic} was refused: {exc}."
                    ) from None
            client.poll(0.05)  # outside the lock, so a close need not wait for room
        client.poll(0)
        return handle

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports; while a close flushes, its client still serves them."""
        client = self._producer
        if client is None:
            raise self._closed_error()
        client.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued event is delivered; raise if some were not.

        Failed deliveries leave the queue as failures, so they are counted from the delivery
        reports: `DeliveryError` names them (each handle keeps its error).
        """
        client = self._producer  # read once: a concurrent close may drop it
        if client is not None:  # else close flushed everything
            self._flush(client, timeout)

    def _flush(self, client: Any, timeout: float) -> None:
        remaining = client.flush(timeout)
        if remaining:
            raise ComponentUnavailableError(
                f"{remaining} events were not delivered within {timeout:.0f} s.",
                remedy="check the broker with `dictamesh status`.",
            )
        failed, self.undelivered = self.undelivered, []
        if failed:
            first = failed[0]
            raise DeliveryError(
                f"{len(failed)} events were not delivered; the first, {first.event.id} to "
                f"{first.topic}: {first.error}.",
                remedy="check the broker with `dictamesh status` and publish them again; "
                "they were not published.",
            )

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, then shut the client down. Idempotent.

        Until its last reference goes, librdkafka keeps the client's broker connections open
        (and reconnecting), so whoever still holds this producer, a handle say, would hold them.
        Raises as `flush` does; the client is shut down all the same.
        """
        with self._lock:  # from here on publish raises "closed"
            if self._closed:
                return
            self._closed = True
        try:
            self._flush(self._producer, timeout)
        finally:
            self._producer = None
            self.schemas.close()
