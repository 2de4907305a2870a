"""The transactional outbox: an event commits with the change that caused it, then is relayed.

Domain writes (schema registry, billing, configuration) call `enqueue` inside their own database
transaction, so an event exists exactly when its change does: a rollback takes both, a crash
after the commit loses neither. The `OutboxRelay` publishes pending rows in order with the
idempotent producer and marks them published. A relay that dies between the broker's
acknowledgement and its own commit publishes those rows again on restart, with the same CloudEvent
ids; consumers are idempotent on (source, id), so delivery is at least once and the effect once.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, text

from workbench.events.envelope import CloudEvent, ContentMode
from workbench.observability import get_logger

log = get_logger(__name__)

OUTBOX_CHANNEL = "dictamesh_outbox"


def enqueue(
    conn: Connection, topic: str, event: CloudEvent, *, mode: ContentMode = "binary"
) -> int:
    """Add `event` to the outbox inside the caller's transaction; return its outbox id."""
    record = event.to_kafka(mode)
    headers = [
        [name, value.decode() if isinstance(value, bytes) else value]
        for name, value in record.headers
    ]
    outbox_id = conn.execute(
        text(
            "INSERT INTO dictamesh_outbox (topic, event_id, record_key, record_value, headers) "
            "VALUES (:topic, :event_id, :key, :value, CAST(:headers AS jsonb)) RETURNING id"
        ),
        {
            "topic": topic,
            "event_id": event.id,
            "key": record.key,
            "value": record.value,
            "headers": orjson.dumps(headers).decode(),
        },
    ).scalar_one()
    # Delivered at commit, never for a rolled-back change: the relay wakes at once.
    conn.execute(
        text("SELECT pg_notify(:channel, :topic)"), {"channel": OUTBOX_CHANNEL, "topic": topic}
    )
    return int(outbox_id)


class OutboxRelay:
    """Publishes pending outbox rows to Kafka; one background worker per installation is enough.

    Several relays may run: each batch is claimed with ``FOR UPDATE SKIP LOCKED``.
    """

    name = "outbox"

    def __init__(
        self,
        bootstrap: str,
        postgres_url: str,
        *,
        batch_size: int = 500,
        idle_poll: float = 1.0,
        delivery_timeout: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.postgres_url = postgres_url
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.delivery_timeout = delivery_timeout
        # Made on first use and released when run() ends: a live client stays connected to
        # the broker for as long as anyone holds the relay.
        self.producer: Any = None
        self._stopping = threading.Event()
        self.published = 0

    def __repr__(self) -> str:
        return f"OutboxRelay(published={self.published})"

    def stop(self) -> None:
        """End the current run, or the next one if none is running."""
        self._stopping.set()

    def _client(self) -> Any:
        if self.producer is None:
            from confluent_kafka import Producer

            self.producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.timeout.ms": int(self.delivery_timeout * 1000),
                    "log_level": 3,
                }
            )
        return self.producer

    def relay_once(self, conn: psycopg.Connection[Any]) -> int:
        """Publish one batch of pending rows; return how many were published."""
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, topic, record_key, record_value, headers FROM dictamesh_outbox "
                "WHERE published_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.batch_size,),
            ).fetchall()
            if not rows:
                return 0
            failures: dict[int, str] = {}
            producer = self._client()

            def delivered(row_id: int) -> Any:
                def report(error: Any, _message: Any) -> None:
                    if error is not None:
                        failures[row_id] = str(error)

                return report

            for row_id, topic, key, value, headers in rows:
                producer.produce(
                    topic,
                    value=bytes(value),
                    key=bytes(key) if key is not None else None,
                    headers=[(name, header) for name, header in headers],
                    on_delivery=delivered(row_id),
                )
            undelivered = producer.flush(self.delivery_timeout)
            published = [row[0] for row in rows if row[0] not in failures]
            if undelivered:
                published = []  # unknown outcome: keep them all pending, send again later
            conn.execute(
                "UPDATE dictamesh_outbox SET published_at = now(), attempts = attempts + 1 "
                "WHERE id = ANY(%s)",
                (published,),
            )
            if failures or undelivered:
                conn.execute(
                    "UPDATE dictamesh_outbox SET attempts = attempts + 1, last_error = %s "
                    "WHERE id = ANY(%s) AND published_at IS NULL",
                    (
                        next(iter(failures.values()), "delivery not confirmed"),
                        [row[0] for row in rows],
                    ),
                )
                log.warning("outbox delivery failed", pending=len(rows) - len(published))
        self.published += len(published)
        return len(published)

    def run(self) -> None:
        """Relay until `stop()`: woken by each commit's notification, polling when idle.

        A stopped relay can run again.
        """
        delay = 0.1
        self._client()
        try:
            while not self._stopping.is_set():
                try:
                    with psycopg.connect(self.postgres_url, autocommit=True) as conn:
                        conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                        delay = 0.1
                        while not self._stopping.is_set():
                            if self.relay_once(conn) == self.batch_size:
                                continue  # more are waiting
                            for _ in conn.notifies(timeout=self.idle_poll, stop_after=1):
                                pass
                except psycopg.OperationalError as exc:
                    log.warning("outbox relay waiting for Postgres", error=str(exc)[:200])
                    self._stopping.wait(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self._stopping.clear()  # this run took the stop; the next one runs
            producer, self.producer = self.producer, None
            if producer is not None:
                producer.flush(10)
