"""Crash the consumer with SIGKILL at random points: nothing lost, nothing applied twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from benchmarks.common import entity_events
from tests.helpers import BIN
from workbench import db
from workbench.catalog.projector import CatalogProjector
from workbench.events.consumer import ConsumerRunner, RunnerConfig
from workbench.events.producer import EventProducer
from workbench.events.topics import ensure_topics
from workbench.settings import load_settings
from workbench.stack import Endpoints, Stack

pytestmark = pytest.mark.stack

EVENTS = 100_000
ENTITIES = 70_000  # 30,000 entities get a second version, on the updated topic
KILLS = 10

COMPARED = [
    "SELECT * FROM dictamesh_entity_catalog ORDER BY id",
    "SELECT event_id, event_source, event_type, entity_id, entity_version, after_state, "
    "topic, kafka_partition, kafka_offset, occurred_at FROM dictamesh_event_log "
    "ORDER BY event_source, event_id",
    # invalidation_count counts the changes a reader could have seen, which depends on the
    # order the created and updated topics were read in; it is bounded below instead.
    "SELECT cache_key, entity_id, source_version, last_refreshed_at "
    "FROM dictamesh_cache_status ORDER BY cache_key",
]


@pytest.fixture
def crash_stack(tmp_path: Path) -> Iterator[tuple[Path, Endpoints]]:
    home = tmp_path / "home"
    stack = Stack(load_settings(home=home))
    endpoints = stack.up()
    db.migrate_up(db.make_engine(endpoints.postgres_url))
    ensure_topics(endpoints.kafka_bootstrap)
    yield home, endpoints
    stack.down()


_connections: dict[str, psycopg.Connection[Any]] = {}


def _applied(url: str) -> int:
    """Records the live projector has committed (one connection, reused while polling)."""
    conn = _connections.get(url)
    if conn is None or conn.closed:
        conn = _connections[url] = psycopg.connect(url, autocommit=True)
    row = conn.execute(
        "SELECT coalesce(sum(next_offset), 0) FROM dictamesh_consumer_offsets "
        "WHERE group_id = 'dictamesh.catalog-projector'"
    ).fetchone()
    return int(row[0]) if row else 0


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_kill_9_at_random_points_matches_a_clean_replay(
    crash_stack: tuple[Path, Endpoints],
) -> None:
    home, endpoints = crash_stack
    producer = EventProducer(endpoints.kafka_bootstrap)
    for topic, event in entity_events(EVENTS, entities=ENTITIES, source="/crash"):
        producer.publish(topic, event)
    producer.flush(120)

    rng = random.Random(20261126)  # noqa: S311 - reproducible crash points
    env = {**os.environ, "DICTAMESH_HOME": str(home), "DICTAMESH_LOG_LEVEL": "WARNING"}
    kills = 0
    while kills < KILLS:
        before = _applied(endpoints.postgres_url)
        assert before < EVENTS, "the run finished before every crash happened; raise EVENTS"
        target = before + rng.randint(1_000, (EVENTS - before) // (KILLS - kills + 1))
        process = subprocess.Popen(
            [str(BIN / "dictamesh"), "consume", "--sink", "catalog"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while _applied(endpoints.postgres_url) < target:
            assert process.poll() is None, "the consumer died on its own"
            assert time.monotonic() < deadline, "the consumer made no progress"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        kills += 1
    process = subprocess.Popen(
        [str(BIN / "dictamesh"), "consume", "--sink", "catalog"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while _applied(endpoints.postgres_url) < EVENTS:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    process.terminate()
    process.wait(60)
    for conn in _connections.values():
        conn.close()

    # The oracle: the same topics replayed once, without crashes, into an empty database.
    admin = endpoints.postgres_url.rsplit("/", 1)[0]
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute('CREATE DATABASE "clean_replay"')
    clean = admin + "/clean_replay"
    db.migrate_up(db.make_engine(clean))
    runner = ConsumerRunner(
        CatalogProjector(group="clean-replay"),
        RunnerConfig(bootstrap=endpoints.kafka_bootstrap, postgres_url=clean, batch_size=5000),
    )
    deadline = time.monotonic() + 600
    runner.run(until=lambda: runner.applied >= EVENTS or time.monotonic() > deadline)
    assert runner.applied == EVENTS

    entities = _rows(endpoints.postgres_url, "SELECT count(*) FROM dictamesh_entity_catalog")
    assert entities == [(ENTITIES,)], "nothing lost"
    counted_twice = _rows(
        endpoints.postgres_url,
        "SELECT count(*) FROM dictamesh_cache_status c "
        "JOIN dictamesh_entity_catalog e ON e.id = c.entity_id "
        "WHERE c.invalidation_count > e.version - 1",
    )
    assert counted_twice == [(0,)], "a change was applied twice"
    for query in COMPARED:
        assert _rows(endpoints.postgres_url, query) == _rows(clean, query), query
