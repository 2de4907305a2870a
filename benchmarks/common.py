"""Shared set-up: an isolated embedded stack and a stream of entity events."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from workbench import db
from workbench.catalog.model import EntityChange
from workbench.events import topics
from workbench.events.envelope import CloudEvent
from workbench.events.topics import ensure_topics
from workbench.settings import load_settings
from workbench.stack import Endpoints, Stack


@contextmanager
def isolated_stack() -> Iterator[Endpoints]:
    """A fresh embedded stack in a temporary home, migrated, with the topics created.

    While it runs, DICTAMESH_HOME names that home, so `dictamesh` processes started by the
    benchmark (a projector in its own process) use the same stack.
    """
    with tempfile.TemporaryDirectory(prefix="dictamesh-bench-") as home:
        stack = Stack(load_settings(home=Path(home)))
        endpoints = stack.up()
        previous = os.environ.get("DICTAMESH_HOME")
        os.environ["DICTAMESH_HOME"] = home
        try:
            db.migrate_up(db.make_engine(endpoints.postgres_url))
            ensure_topics(endpoints.kafka_bootstrap)
            yield endpoints
        finally:
            if previous is None:
                os.environ.pop("DICTAMESH_HOME", None)
            else:
                os.environ["DICTAMESH_HOME"] = previous
            stack.down()


def entity_events(
    count: int, *, entities: int | None = None, source: str = "/bench", system: str = "bench"
) -> Iterator[tuple[str, CloudEvent]]:
    """`count` entity events over `entities` entities (default: one event each), ~400 B each."""
    entities = entities or count
    versions: dict[int, int] = {}
    for i in range(count):
        n = i % entities
        versions[n] = versions.get(n, 0) + 1
        change = EntityChange(
            domain="bench",
            source_system=system,
            entity_type="order",
            source_id=str(n),
            version=versions[n],
            attributes={
                "customer": f"c{n % 997}",
                "amount": n % 1000,
                "status": "open",
                "note": "benchmark order with a short free-text note",
            },
        )
        topic = topics.ENTITY_CREATED if versions[n] == 1 else topics.ENTITY_UPDATED
        yield (
            topic,
            CloudEvent(
                source=source,
                type=topic,
                partitionkey=change.ref.key,
                data=change.model_dump(mode="json", exclude_none=True),
            ),
        )


@dataclass(frozen=True)
class Machine:
    description: str

    @classmethod
    def current(cls) -> Machine:
        memory = psutil.virtual_memory().total / 2**30
        return cls(
            f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{memory:.0f} GiB, Python {platform.python_version()}"
        )


def wait_until(condition: object, timeout: float, interval: float = 0.05) -> float:
    """Poll `condition()` until true; return the seconds it took."""
    started = time.perf_counter()
    while not condition():  # type: ignore[operator]
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not done within {timeout} s")
        time.sleep(interval)
    return time.perf_counter() - started
