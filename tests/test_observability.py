from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from workbench.observability import (
    check_broker,
    check_postgres,
    check_redis,
    configure_logging,
    get_logger,
    render_metrics,
)
from workbench.settings import load_settings
from workbench.stack import Endpoints


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The test points logging at its captured stderr; later tests must not write there."""
    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_structured_and_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(load_settings(log_format="json"))
    get_logger("test").info(
        "connecting",
        url="postgresql://app:s3cr3t-value@db/x",
        api_token="tok-123456789",
        rows=3,
    )
    logging.getLogger("stdlib").warning("plain %s", "message")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first = lines[0]
    assert first["event"] == "connecting"
    assert first["level"] == "info"
    assert first["rows"] == 3
    assert first["url"] == "postgresql://app:***@db/x"
    assert first["api_token"] == "***"
    assert "timestamp" in first
    assert lines[1]["event"] == "plain message"
    assert "s3cr3t-value" not in json.dumps(lines)


def test_unreachable_components_report_unhealthy_without_raising() -> None:
    reports = [
        check_postgres("postgresql://u:pw@127.0.0.1:9/x"),
        check_broker("127.0.0.1:9"),
        check_redis("redis://127.0.0.1:9/0"),
    ]
    for report in reports:
        assert not report.healthy
        assert report.error
        assert "pw@" not in report.url


@pytest.mark.stack
def test_health_details_per_component(stack: Endpoints, workbench: object) -> None:
    postgres = check_postgres(stack.postgres_url, {"size": 5})
    assert postgres.healthy
    assert postgres.version and postgres.version.startswith("PostgreSQL 16")
    assert postgres.details["vector_installed"]
    assert "dictamesh_entity_catalog" in postgres.details["tables"]
    assert postgres.details["pool"] == {"size": 5}

    broker = check_broker(stack.kafka_bootstrap)
    assert broker.healthy
    assert broker.details["brokers"] == 1
    assert isinstance(broker.details["topics"], dict)

    redis = check_redis(stack.redis_url)
    assert redis.healthy
    assert redis.details["used_memory"]
    assert redis.version and redis.version.startswith("Redis")


@pytest.mark.stack
def test_metrics_expose_component_health(workbench: object) -> None:
    workbench.health()  # type: ignore[attr-defined]
    text = render_metrics().decode()
    for component in ("postgres", "broker", "redis"):
        assert f'dictamesh_component_up{{component="{component}"}} 1.0' in text
    assert "dictamesh_build_info" in text
