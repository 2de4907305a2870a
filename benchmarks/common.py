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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a process and its descendants, those it has reaped included."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def component_pid(name: str) -> int:
    """The pid of a component of the running embedded stack (`postgres`, `broker`)."""
    return int((Path(os.environ["DICTAMESH_HOME"]) / "run" / f"{name}.pid").read_text())


@dataclass
class CpuMeter:
    """CPU seconds the consumers, the broker and Postgres spend between two points.

    Postgres' share leaves out the backend of `observer_backend` (the benchmark's own watching
    connection), which would otherwise be charged to the side being measured.
    """

    consumers: list[int]
    observer_backend: int | None = None

    def __post_init__(self) -> None:
        self.started = self._sample()

    def _sample(self) -> dict[str, float]:
        observer = tree_cpu_seconds(self.observer_backend) if self.observer_backend else 0.0
        return {
            "consumers": sum(tree_cpu_seconds(pid) for pid in self.consumers),
            "broker": tree_cpu_seconds(component_pid("broker")),
            "postgres": tree_cpu_seconds(component_pid("postgres")) - observer,
        }

    def used(self) -> dict[str, float]:
        """CPU seconds each part used since the meter was made, and their total."""
        now = self._sample()
        used = {part: now[part] - self.started[part] for part in now}
        return {**used, "total": sum(used.values())}
