"""Hot reload: change notices through Postgres LISTEN/NOTIFY, watchers with heartbeats, a cache.

Every committed change sends ``NOTIFY dictamesh_config`` in its own transaction (so a notice is
never sent for a change that rolled back). One listener thread per process receives them, drops
the cached entries of the changed key and hands the change to each registered watcher whose
pattern matches. Each watcher runs its callback on a thread of its own, in version order, so a
slow callback delays only its own watcher. After a lost connection it reconnects and replays
the versions it missed from the history table.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from workbench.config.model import ConfigChange, Scope
from workbench.observability import get_logger

log = get_logger(__name__)

CHANNEL = "dictamesh_config"
HEARTBEAT_SECONDS = 5.0
L1_TTL_SECONDS = 60.0
L2_TTL_SECONDS = 300
REDIS_PREFIX = "dictamesh:config:v1"
MAX_PAYLOAD_VALUE = 6000

Callback = Callable[[ConfigChange], None]


def notify_payload(
    version_id: int, scope: Scope, key: str, action: str, *, is_secret: bool, value: Any
) -> str:
    """The NOTIFY payload: scope and key; the value only when small and not a secret."""
    payload: dict[str, Any] = {
        "v": version_id,
        "e": scope.environment,
        "s": scope.service,
        "c": scope.component,
        "k": key,
        "a": action,
        "x": is_secret,
        "t": time.time(),
    }
    if not is_secret:
        encoded = json.dumps(value)
        if len(encoded) <= MAX_PAYLOAD_VALUE:
            payload["val"] = value
    return json.dumps(payload)


def parse_payload(payload: str) -> ConfigChange:
    data = json.loads(payload)
    return ConfigChange(
        version_id=int(data["v"]),
        scope=Scope(data["e"], data.get("s", ""), data.get("c", "")),
        key=data["k"],
        action=data["a"],
        is_secret=bool(data.get("x")),
        value=data.get("val"),
        has_value="val" in data,
        committed_at=float(data.get("t", 0.0)),
    )


# -- the cache -----------------------------------------------------------------------------


class ConfigCache:
    """L1 (this process's memory) and L2 (Redis, shared by every process) for resolved values.

    Redis entries carry the generation of their environment and key at the time of the database
    read; a change bumps the generation, so an entry written by a slow reader that raced a change
    is never served. Secrets are never cached.
    """

    def __init__(self, redis_url: str | None) -> None:
        self._l1: dict[tuple[str, str, str, str], tuple[float, tuple[bool, Any]]] = {}
        self._lock = threading.Lock()
        self._redis: Any = None
        self._redis_url = redis_url
        self._redis_failed_at = 0.0
        self.hits_l1 = 0
        self.hits_l2 = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"ConfigCache(l1={len(self._l1)} entries)"

    def _client(self) -> Any:
        if self._redis_url is None or time.monotonic() - self._redis_failed_at < 5.0:
            return None
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self._redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        return self._redis

    def _redis_call(self, action: Callable[[Any], Any]) -> Any:
        client = self._client()
        if client is None:
            return None
        try:
            return action(client)
        except Exception as exc:  # Redis is an optimisation: fall back to Postgres
            self._redis_failed_at = time.monotonic()
            log.warning("config cache: redis unavailable, reading from postgres", error=str(exc))
            return None

    @staticmethod
    def _entry_key(scope: Scope, key: str) -> str:
        return f"{REDIS_PREFIX}:val:{scope.environment}:{scope.service}:{scope.component}:{key}"

    @staticmethod
    def _gen_key(environment: str, key: str) -> str:
        return f"{REDIS_PREFIX}:gen:{environment}:{key}"

    def get(self, scope: Scope, key: str, load: Callable[[], tuple[bool, Any]]) -> tuple[bool, Any]:
        """(found, value), from L1, else L2, else `load()` (which reads Postgres)."""
        l1_key = (scope.environment, scope.service, scope.component, key)
        entry = self._l1.get(l1_key)
        if entry is not None and entry[0] > time.monotonic():
            self.hits_l1 += 1
            return entry[1]
        gen_key = self._gen_key(scope.environment, key)
        cached = self._redis_call(lambda r: r.mget([self._entry_key(scope, key), gen_key]))
        generation = 0
        if cached is not None:
            raw, gen = cached
            generation = int(gen or 0)
            if raw is not None:
                data = json.loads(raw)
                if data["g"] == generation:
                    self.hits_l2 += 1
                    hit = (bool(data["f"]), data.get("v"))
                    self._put_l1(l1_key, hit)
                    return hit
        self.misses += 1
        result: tuple[bool, Any] = load()
        self._redis_call(
            lambda r: r.set(
                self._entry_key(scope, key),
                json.dumps({"g": generation, "f": result[0], "v": result[1]}),
                ex=L2_TTL_SECONDS,
            )
        )
        self._put_l1(l1_key, result)
        return result

    def _put_l1(self, l1_key: tuple[str, str, str, str], result: tuple[bool, Any]) -> None:
        with self._lock:
            self._l1[l1_key] = (time.monotonic() + L1_TTL_SECONDS, result)

    def invalidate_local(self, environment: str, key: str) -> None:
        with self._lock:
            for cached in [k for k in self._l1 if k[0] == environment and k[3] == key]:
                self._l1.pop(cached, None)

    def invalidate(self, environment: str, key: str) -> None:
        """Drop the key everywhere: this process's memory and (by generation) Redis."""
        self.invalidate_local(environment, key)
        self._redis_call(lambda r: r.incr(self._gen_key(environment, key)))

    def clear_local(self) -> None:
        with self._lock:
            self._l1.clear()

    def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None


# -- watchers ------------------------------------------------------------------------------


@dataclass
class Watch:
    """One registered watcher; `stop()` unregisters it."""

    id: uuid.UUID
    name: str
    patterns: tuple[str, ...]
    callback: Callback = field(repr=False)
    environment: str | None = None
    service: str | None = None
    hub: WatchHub | None = field(default=None, repr=False)
    notified: int = 0
    last_version_id: int | None = None
    errors: int = 0
    _inbox: queue.SimpleQueue[ConfigChange | None] = field(
        default_factory=queue.SimpleQueue, repr=False
    )
    _worker: threading.Thread | None = field(default=None, repr=False)

    def matches(self, change: ConfigChange) -> bool:
        if self.environment is not None and change.scope.environment != self.environment:
            return False
        if self.service is not None and change.scope.service not in ("", self.service):
            return False
        return any(fnmatch.fnmatchcase(change.key, pattern) for pattern in self.patterns)

    def deliver(self, change: ConfigChange) -> None:
        """Queue `change` for the callback, which runs on this watcher's own thread."""
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._drain, name=f"dictamesh-config-watch-{self.name}", daemon=True
            )
            self._worker.start()
        self._inbox.put(change)

    def _drain(self) -> None:
        while (change := self._inbox.get()) is not None:
            try:
                self.callback(change)
            except Exception as exc:
                self.errors += 1
                log.warning("config watcher callback failed", watcher=self.name, error=repr(exc))
            self.notified += 1
            self.last_version_id = change.version_id

    def stop(self) -> None:
        if self.hub is not None:
            self.hub.unregister(self)
            self.hub = None
        if self._worker is not None:
            self._inbox.put(None)  # the callback finishes what is queued, then its thread ends
            self._worker = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class WatchHub:
    """One LISTEN connection per process, feeding the cache and every watcher of the process."""

    def __init__(self, postgres_url: str, engine: Engine, cache: ConfigCache) -> None:
        self.postgres_url = postgres_url
        self.engine = engine
        self.cache = cache
        self._watches: dict[uuid.UUID, Watch] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._last_version: int | None = None
        self._last_heartbeat = 0.0
        self.heartbeat_seconds = HEARTBEAT_SECONDS
        self.received = 0

    def __repr__(self) -> str:
        return f"WatchHub(watches={len(self._watches)}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Start listening (idempotent); returns once LISTEN is in place."""
        with self._lock:
            if not self.running:
                self._stop.clear()
                self._listening.clear()
                self._thread = threading.Thread(
                    target=self._run, name="dictamesh-config-listener", daemon=True
                )
                self._thread.start()
        self._listening.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        self._delete_rows([w.id for w in watches])
        for watch in watches:
            watch.hub = None  # its row is gone already
            watch.stop()

    def register(
        self,
        patterns: tuple[str, ...],
        callback: Callback,
        *,
        name: str,
        environment: str | None,
        service: str | None,
    ) -> Watch:
        watch = Watch(uuid.uuid4(), name, patterns, callback, environment, service, hub=self)
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO dictamesh_config_watchers (id, name, patterns, environment, "
                    "service, host, pid) VALUES (:id, :name, :patterns, :environment, :service, "
                    ":host, :pid)"
                ),
                {
                    "id": watch.id,
                    "name": name,
                    "patterns": list(patterns),
                    "environment": environment,
                    "service": service,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )
        with self._lock:
            self._watches[watch.id] = watch
        self.start()
        return watch

    def unregister(self, watch: Watch) -> None:
        with self._lock:
            self._watches.pop(watch.id, None)
        self._delete_rows([watch.id])

    def _delete_rows(self, ids: list[uuid.UUID]) -> None:
        if not ids:
            return
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    text("DELETE FROM dictamesh_config_watchers WHERE id = ANY(:ids)"),
                    {"ids": ids},
                )
        except Exception as exc:  # the database may already be gone at shutdown
            log.warning("config watchers: could not unregister", error=str(exc))

    # -- the listener thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.postgres_url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self._catch_up(connection)
                    self._listening.set()
                    backoff = 0.2
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=0.25):
                            self._dispatch(parse_payload(notice.payload))
                        self._heartbeat(connection)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("config listener reconnecting", error=str(exc))
                self.cache.clear_local()  # notices may have been missed meanwhile
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _catch_up(self, connection: psycopg.Connection[Any]) -> None:
        """Replay the versions committed while the listener was not connected."""
        if self._last_version is None:
            row = connection.execute(
                "SELECT coalesce(max(id), 0) FROM dictamesh_config_versions"
            ).fetchone()
            self._last_version = int(row[0]) if row else 0
            return
        rows = connection.execute(
            "SELECT v.id, v.environment, v.service, v.component, v.key, v.action, "
            "coalesce(k.kind = 'secret', false) FROM dictamesh_config_versions v "
            "LEFT JOIN dictamesh_config_keys k ON k.key = v.key WHERE v.id > %s ORDER BY v.id",
            (self._last_version,),
        ).fetchall()
        for vid, env, svc, comp, key, action, secret in rows:
            self._dispatch(ConfigChange(int(vid), Scope(env, svc, comp), key, action, bool(secret)))

    def _dispatch(self, change: ConfigChange) -> None:
        self.received += 1
        self._last_version = max(self._last_version or 0, change.version_id)
        self.cache.invalidate_local(change.scope.environment, change.key)
        with self._lock:
            watches = [w for w in self._watches.values() if w.matches(change)]
        for watch in watches:
            watch.deliver(change)

    def _heartbeat(self, connection: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < self.heartbeat_seconds:
            return
        self._last_heartbeat = now
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            connection.execute(
                "UPDATE dictamesh_config_watchers SET last_heartbeat = now(), notified = %s, "
                "last_version_id = %s WHERE id = %s",
                (watch.notified, watch.last_version_id, watch.id),
            )
