"""A topic's newest events: a snapshot, or a live table that keeps itself up to date.

The live tail reads in a background thread with one consumer of its own (no group, nothing
committed), so a notebook cell returns at once while its output keeps changing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl

from workbench.events.envelope import CloudEvent, InvalidEventError
from workbench.events.topics import group_free_reader, read_to_end

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
_OLDEST = datetime.min.replace(tzinfo=UTC)
TAIL_GROUP = "dictamesh-tail"  # never joined: readers assign their partitions


def read_last(bootstrap: str, topic: str, n: int) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The last `n` events of each partition of `topic`, and where each partition ends."""
    from confluent_kafka import TopicPartition

    consumer = group_free_reader(bootstrap, TAIL_GROUP)
    rows: list[dict[str, Any]] = []
    ends: dict[int, int] = {}
    try:
        # Asking for all topics never creates this one on brokers that create on demand.
        existing = consumer.list_topics(timeout=5).topics
        if topic not in existing:
            from workbench.errors import UnknownNameError

            raise UnknownNameError("topic", topic, [t for t in existing if t[:2] != "__"])
        starts = []
        for partition in sorted(existing[topic].partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 5)
            ends[partition] = high
            if high > low:
                starts.append(TopicPartition(topic, partition, max(low, high - n)))
        for message in read_to_end(consumer, starts, timeout=5):
            rows.append(event_row(message))
            ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)
    finally:
        consumer.close()
    return newest(rows, n), ends


def newest(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["time"] or _OLDEST)[-n:]


def tail_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=TAIL_SCHEMA)


class LiveTail:
    """The newest `n` events of a topic, kept up to date in a background thread.

    In Jupyter its table refreshes in place as events arrive; `.frame` is the table now.
    It stops after `timeout` seconds, on `stop()`, or when used as a context manager, on exit.
    """

    def __init__(self, bootstrap: str, topic: str, n: int = 20, *, timeout: float = 600.0):
        self.bootstrap, self.topic, self.n = bootstrap, topic, n
        rows, self._ends = read_last(bootstrap, topic, n)
        self._rows: deque[dict[str, Any]] = deque(rows, maxlen=n)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[pl.DataFrame], None]] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._follow, daemon=True, name=f"tail:{topic}")
        self._thread.start()

    def __repr__(self) -> str:
        state = "live" if self.running else "stopped"
        try:
            table = repr(self.frame)
        except Exception as exc:  # a repr must never raise
            table = f"<unavailable: {exc}>"
        return f"LiveTail({self.topic!r}, n={self.n}, {state})\n{table}"

    def __enter__(self) -> LiveTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def frame(self) -> pl.DataFrame:
        with self._lock:
            return tail_frame(list(self._rows))

    def on_update(self, listener: Callable[[pl.DataFrame], None]) -> None:
        """Call `listener` with the new table whenever events arrive."""
        self._listeners.append(listener)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        handle = display(self.frame, display_id=True)  # type: ignore[no-untyped-call]
        if handle is not None:
            self.on_update(handle.update)

    def _follow(self) -> None:
        from confluent_kafka import TopicPartition

        consumer = group_free_reader(self.bootstrap, TAIL_GROUP)
        try:
            consumer.assign(
                [TopicPartition(self.topic, p, offset) for p, offset in self._ends.items()]
            )
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                messages = consumer.consume(500, 0.5)
                arrived = [event_row(m) for m in messages if m.error() is None]
                if not arrived:
                    continue
                with self._lock:
                    self._rows = deque(newest([*self._rows, *arrived], self.n), maxlen=self.n)
                frame = self.frame
                for listener in self._listeners:
                    listener(frame)
        finally:
            consumer.close()


def event_row(message: Any) -> dict[str, Any]:
    """One tail row; a record that is no CloudEvent shows why, with the start of its bytes."""
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

    data = event.data
    if isinstance(data, bytes):
        data = data.decode(errors="replace")
    elif not isinstance(data, str):
        data = orjson.dumps(data).decode()
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
