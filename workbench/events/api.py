"""`wb.events`: publish, tail a topic, inspect and replay dead letters."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import polars as pl

from workbench.events.deadletters import dead_letter_frame, read_dead_letters, replay_letters
from workbench.events.envelope import CloudEvent, InvalidEventError
from workbench.events.producer import EventProducer, PublishHandle

TAIL_SCHEMA: dict[str, pl.DataType] = {
    "offset": pl.Int64(),
    "partition": pl.Int64(),
    "time": pl.Datetime("us", "UTC"),
    "type": pl.String(),
    "source": pl.String(),
    "subject": pl.String(),
    "id": pl.String(),
    "data": pl.String(),
}


class Events:
    """The event backbone as a notebook sees it."""

    def __init__(self, bootstrap: str, producer: EventProducer) -> None:
        self.bootstrap = bootstrap
        self.producer = producer

    def __repr__(self) -> str:
        return f"Events(bootstrap={self.bootstrap!r})"

    def publish(self, topic: str, event: CloudEvent) -> PublishHandle:
        return self.producer.publish(topic, event)

    def tail(self, topic: str, n: int = 20, *, follow: float = 0.0) -> pl.DataFrame:
        """The last `n` events of `topic`, newest last.

        With ``follow=SECONDS`` the table refreshes in place in Jupyter as events arrive, for that
        long (interrupt the cell to stop early), and the final table is returned.
        """
        frame = self._last(topic, n)
        if follow <= 0:
            return frame
        from IPython.display import display

        handle = display(frame, display_id=True)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + follow
        try:
            while time.monotonic() < deadline:
                time.sleep(1.0)
                frame = self._last(topic, n)
                if handle is not None:
                    handle.update(frame)
        except KeyboardInterrupt:
            pass
        return frame

    def _last(self, topic: str, n: int) -> pl.DataFrame:
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "dictamesh-tail",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 0,
            }
        )
        rows: list[dict[str, Any]] = []
        try:
            # Asking for all topics never creates this one on brokers that create on demand.
            existing = consumer.list_topics(timeout=5).topics
            if topic not in existing:
                from workbench.errors import UnknownNameError

                raise UnknownNameError("topic", topic, [t for t in existing if t[:2] != "__"])
            partitions = sorted(existing[topic].partitions)
            if not partitions:
                return pl.DataFrame(schema=TAIL_SCHEMA)
            starts = []
            for partition in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 5)
                starts.append(TopicPartition(topic, partition, max(low, high - n)))
            consumer.assign(starts)
            done: set[int] = set()
            deadline = time.monotonic() + 5
            while len(done) < len(partitions) and time.monotonic() < deadline:
                message: Any = consumer.poll(0.2)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                    continue
                rows.append(_row(message))
        finally:
            consumer.close()
        rows.sort(key=lambda r: r["time"] or datetime.min.replace(tzinfo=UTC))
        return pl.DataFrame(rows[-n:], schema=TAIL_SCHEMA)

    def dead_letters(self, topics: list[str] | None = None) -> pl.DataFrame:
        """What the dead-letter topics hold, with reason and original position."""
        return dead_letter_frame(read_dead_letters(self.bootstrap, topics))

    def replay(self, letter_ids: list[str]) -> int:
        """Send exactly these dead letters (their `letter_id`s) back to their original topics.

        Sends none when one of them is no longer in its dead-letter topic.
        """
        return replay_letters(self.bootstrap, letter_ids)


def _row(message: Any) -> dict[str, Any]:
    try:
        event = CloudEvent.from_kafka(message.value(), message.headers(), message.key())
    except InvalidEventError as exc:
        return {
            "offset": message.offset(),
            "partition": message.partition(),
            "time": None,
            "type": f"<invalid: {exc.reason}>",
            "source": None,
            "subject": None,
            "id": None,
            "data": (message.value() or b"")[:200].decode(errors="replace"),
        }
    import orjson

    data = event.data if isinstance(event.data, str) else orjson.dumps(event.data).decode()
    return {
        "offset": message.offset(),
        "partition": message.partition(),
        "time": event.time,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "id": event.id,
        "data": data[:500],
    }
