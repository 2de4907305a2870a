"""Structured logging, Prometheus metrics and per-component health checks."""

from __future__ import annotations

import logging
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Gauge, Info, generate_latest

from workbench import __version__
from workbench.settings import Settings, redact_url

if TYPE_CHECKING:
    from workbench.stack import Endpoints

# -- logging -------------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|cookie", re.I)
_URL_WITH_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)", re.I)


def scrub(value: Any) -> Any:
    """Mask passwords inside URLs in a logged value."""
    if isinstance(value, str):
        return _URL_WITH_PASSWORD.sub(r"\1***\3", value)
    return value


def _redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = "***" if _SECRET_KEY.search(key) else scrub(value)
    return event


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library through one renderer (console or JSON)."""
    level = getattr(logging, settings.log_level)
    renderer: Callable[..., Any] = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries narrate every step at INFO; their warnings still come through.
    for noisy in ("alembic", "bokeh", "tornado.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


# -- health --------------------------------------------------------------------------------


@dataclass
class HealthReport:
    """What one health check found; `url` never carries a password."""

    name: str
    url: str
    healthy: bool
    version: str | None = None
    latency_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _timed(
    name: str, url: str, check: Callable[[], tuple[str | None, dict[str, Any]]]
) -> HealthReport:
    started = time.perf_counter()
    try:
        version, details = check()
    except Exception as exc:  # a health check reports every failure instead of raising
        return HealthReport(
            name,
            redact_url(url),
            False,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=f"{type(exc).__name__}: {scrub(str(exc)).strip()}",
        )
    return HealthReport(
        name, redact_url(url), True, version, (time.perf_counter() - started) * 1000, details
    )


def check_postgres(url: str, pool_status: Mapping[str, Any] | None = None) -> HealthReport:
    """Server version, pgvector presence, connections, catalog table sizes and pool stats."""
    import psycopg

    def check() -> tuple[str | None, dict[str, Any]]:
        with psycopg.connect(url, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            vector = conn.execute(
                "SELECT default_version, installed_version FROM pg_available_extensions "
                "WHERE name = 'vector'"
            ).fetchone()
            connections = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchone()
            tables = conn.execute(
                "SELECT relname, n_live_tup FROM pg_stat_user_tables "
                "WHERE relname LIKE 'dictamesh%%' ORDER BY relname"
            ).fetchall()
        if vector is None:
            raise RuntimeError("the pgvector extension is not available on this server")
        details: dict[str, Any] = {
            "vector_available": vector[0],
            "vector_installed": vector[1],
            "connections": connections[0] if connections else 0,
            "tables": {name: rows for name, rows in tables},
        }
        if pool_status:
            details["pool"] = dict(pool_status)
        return (f"PostgreSQL {version[0]}" if version else None), details

    return _timed("postgres", url, check)


def _require_listener(bootstrap: str) -> None:
    """Fail fast when no bootstrap server accepts connections (the Kafka client waits long)."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        except OSError:
            continue
        return
    raise ConnectionRefusedError(f"no broker accepts connections at {bootstrap}")


def check_broker(bootstrap: str) -> HealthReport:
    """Broker metadata: brokers, topics and partitions."""
    from confluent_kafka.admin import AdminClient

    def check() -> tuple[str | None, dict[str, Any]]:
        _require_listener(bootstrap)
        admin = AdminClient(
            {"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0}
        )
        metadata = admin.list_topics(timeout=5)
        topics = {
            name: len(topic.partitions)
            for name, topic in sorted(metadata.topics.items())
            if not name.startswith("__")
        }
        return None, {"brokers": len(metadata.brokers), "topics": topics}

    return _timed("broker", bootstrap, check)


def check_redis(url: str) -> HealthReport:
    """PING, version, memory, clients and key count."""
    import redis

    def check() -> tuple[str | None, dict[str, Any]]:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
            info: dict[str, Any] = client.info()
            keys = client.dbsize()
        finally:
            client.close()
        return f"Redis {info['redis_version']}", {
            "used_memory": info.get("used_memory_human"),
            "connected_clients": info.get("connected_clients"),
            "keys": keys,
        }

    return _timed("redis", url, check)


def check_health(
    endpoints: Endpoints, pool_status: Mapping[str, Any] | None = None
) -> list[HealthReport]:
    """All three checks, concurrently, in the order postgres, broker, redis."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(check_postgres, endpoints.postgres_url, pool_status),
            pool.submit(check_broker, endpoints.kafka_bootstrap),
            pool.submit(check_redis, endpoints.redis_url),
        ]
        return [future.result() for future in futures]


# -- metrics -------------------------------------------------------------------------------

REGISTRY = CollectorRegistry()
BUILD_INFO = Info("dictamesh_build", "Workbench build information.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})
COMPONENT_UP = Gauge(
    "dictamesh_component_up",
    "1 when the component passed its last health check.",
    ["component"],
    registry=REGISTRY,
)
COMPONENT_CHECK_SECONDS = Gauge(
    "dictamesh_component_check_seconds",
    "Duration of the component's last health check.",
    ["component"],
    registry=REGISTRY,
)


def record_health(reports: list[HealthReport]) -> None:
    for report in reports:
        COMPONENT_UP.labels(report.name).set(1 if report.healthy else 0)
        COMPONENT_CHECK_SECONDS.labels(report.name).set(report.latency_ms / 1000)


def render_metrics() -> bytes:
    """The registry in Prometheus' text exposition format."""
    return generate_latest(REGISTRY)
