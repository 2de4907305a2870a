"""Hot reload: LISTEN/NOTIFY watchers within a second, only for their keys; cached getter."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import polars as pl
import pytest

from workbench.config import SYSTEM, Config, ConfigChange
from workbench.config.store import Config as ConfigClass

pytestmark = pytest.mark.stack


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_watcher_is_told_within_a_second_only_for_matching_keys(config: Config, ns: str) -> None:
    received: queue.Queue[tuple[float, ConfigChange]] = queue.Queue()
    watch = config.watch(
        f"{ns}.db.*", lambda c: received.put((time.monotonic(), c)), environment="dev", name="api-1"
    )
    try:
        config.set(f"{ns}.cache.ttl", 30, environment="dev")  # not watched
        config.set(f"{ns}.db.host", "db-2", environment="prod")  # other environment
        started = time.monotonic()
        version = config.set(f"{ns}.db.host", "db-1", environment="dev", service="api")
        at, change = received.get(timeout=1.0)
        assert at - started < 1.0
        assert change.key == f"{ns}.db.host" and change.version_id == version.id
        assert change.scope.service == "api" and change.value == "db-1" and change.has_value
        assert received.empty(), "only the matching change"
        rows = config.watchers().filter(config.watchers()["id"] == str(watch.id)).to_dicts()
        assert rows and rows[0]["name"] == "api-1" and rows[0]["patterns"] == [f"{ns}.db.*"]
        assert rows[0]["alive"] is True
    finally:
        watch.stop()
    assert str(watch.id) not in config.watchers()["id"].to_list()


def test_secret_changes_notify_without_the_value(admin: Config, ns: str) -> None:
    received: queue.Queue[ConfigChange] = queue.Queue()
    with admin.watch(f"{ns}.*", received.put):
        admin.set(f"{ns}.password", "s3cr3t-value", environment="dev", secret=True)
        change = received.get(timeout=1.0)
    assert change.is_secret and change.value is None and not change.has_value
    assert "s3cr3t" not in repr(change)


def test_a_change_from_another_process_reaches_a_watcher(workbench: Any, ns: str) -> None:
    """Two independent `Config` objects (separate listeners, as two services would have)."""
    other = ConfigClass(
        workbench.engine,
        postgres_url=workbench.endpoints.postgres_url,
        keys=workbench.config._keys(),
        redis_url=workbench.endpoints.redis_url,
        actor=SYSTEM,
    )
    received: queue.Queue[ConfigChange] = queue.Queue()
    try:
        with other.watch(f"{ns}.feature", received.put):
            workbench.config.set(f"{ns}.feature", {"on": True}, environment="staging")
            assert received.get(timeout=1.0).value == {"on": True}
    finally:
        other.close()


def test_cached_get_is_invalidated_on_change_everywhere(workbench: Any, ns: str) -> None:
    key = f"{ns}.pool"
    mine: Config = workbench.config
    theirs = ConfigClass(
        workbench.engine,
        postgres_url=workbench.endpoints.postgres_url,
        keys=mine._keys(),
        redis_url=workbench.endpoints.redis_url,
    )
    try:
        mine.set(key, 1, environment="dev")
        assert theirs.get(key, environment="dev", service="api", cached=True) == 1
        hits = theirs.cache.hits_l1
        assert theirs.get(key, environment="dev", service="api", cached=True) == 1
        assert theirs.cache.hits_l1 == hits + 1, "second read from memory"
        mine.set(key, 2, environment="dev")  # another process's change, environment level
        _wait(lambda: theirs.get(key, environment="dev", service="api", cached=True) == 2, 1.0)
        # a fresh process reads through Redis (L2) once someone has loaded it
        fresh = ConfigClass(
            workbench.engine,
            postgres_url=workbench.endpoints.postgres_url,
            keys=mine._keys(),
            redis_url=workbench.endpoints.redis_url,
        )
        try:
            assert fresh.get(key, environment="dev", service="api", cached=True) == 2
            assert fresh.cache.hits_l2 == 1
        finally:
            fresh.close()
        assert mine.get(f"{ns}.missing", environment="dev", default=7, cached=True) == 7
    finally:
        theirs.close()


def test_listener_replays_changes_missed_while_disconnected(workbench: Any, ns: str) -> None:
    cfg = ConfigClass(
        workbench.engine,
        postgres_url=workbench.endpoints.postgres_url,
        keys=workbench.config._keys(),
    )
    received: queue.Queue[ConfigChange] = queue.Queue()
    try:
        cfg.watch(f"{ns}.*", received.put)
        hub = cfg._shared.hub
        with workbench.engine.begin() as connection:  # drop the listener's connection
            from sqlalchemy import text

            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                    "'LISTEN dictamesh_config%' OR (state = 'idle' AND query LIKE 'UPDATE "
                    "dictamesh_config_watchers%')"
                )
            )
        workbench.config.set(f"{ns}.k", 1, environment="dev")
        change = received.get(timeout=10)
        assert change.key == f"{ns}.k"
        assert hub.running
    finally:
        cfg.close()


def test_watchers_send_heartbeats(workbench: Any, ns: str) -> None:
    cfg = ConfigClass(
        workbench.engine,
        postgres_url=workbench.endpoints.postgres_url,
        keys=workbench.config._keys(),
    )
    try:
        cfg._shared.hub.heartbeat_seconds = 0.2
        watch = cfg.watch(f"{ns}.*", lambda _c: None, name="beating")

        def beats() -> bool:
            row = cfg.watchers().filter(pl.col("id") == str(watch.id)).to_dicts()[0]
            return bool(row["last_heartbeat"] > row["started_at"] and row["alive"])

        _wait(beats, 5.0)
        assert "<table>" in cfg._repr_html_()
    finally:
        cfg.close()


def test_a_view_reads_one_place_cached_and_sees_changes(config: Config, ns: str) -> None:
    view = config.view("dev", "api", "worker")
    config.set(f"{ns}.threads", 4, environment="dev")
    assert view[f"{ns}.threads"] == 4
    assert view.get(f"{ns}.missing", 0) == 0
    received: queue.Queue[ConfigChange] = queue.Queue()
    with view.watch(f"{ns}.*", received.put):
        config.set(f"{ns}.threads", 9, environment="dev", service="other")  # not this place
        config.set(f"{ns}.threads", 8, environment="dev", service="api", component="web")
        config.set(f"{ns}.threads", 6, environment="dev", service="api")
        change = received.get(timeout=1.0)
        assert change.scope.service == "api" and change.value == 6
        assert received.empty()
    _wait(lambda: view[f"{ns}.threads"] == 6, 1.0)
    assert repr(view) == "ConfigView(dev/api/worker)"


def test_a_slow_callback_delays_only_its_own_watcher(config: Config, ns: str) -> None:
    release = threading.Event()
    slow_seen: queue.Queue[int] = queue.Queue()
    fast_seen: queue.Queue[int] = queue.Queue()

    def slow(change: ConfigChange) -> None:
        release.wait(30)
        slow_seen.put(change.version_id)

    slow_watch = config.watch(f"{ns}.*", slow, name="slow")
    fast_watch = config.watch(f"{ns}.*", lambda c: fast_seen.put(c.version_id), name="fast")
    try:
        first = config.set(f"{ns}.a", 1, environment="dev")
        second = config.set(f"{ns}.b", 2, environment="dev")
        # the slow callback holds the first change; the other watcher has both already
        assert [fast_seen.get(timeout=1.0), fast_seen.get(timeout=1.0)] == [first.id, second.id]
        assert slow_seen.empty()
        release.set()
        assert [slow_seen.get(timeout=5.0), slow_seen.get(timeout=5.0)] == [first.id, second.id]
        _wait(lambda: slow_watch.notified == 2)
    finally:
        release.set()
        slow_watch.stop()
        fast_watch.stop()
