"""The HTTP toolkit against a local server: retries, Retry-After, faults, auth, redaction."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base.errors import CircuitOpenError, SourceRequestError, SourceUnavailableError
from connectors.base.http import (
    ApiKeyAuth,
    BearerAuth,
    CircuitBreaker,
    HttpClient,
    OAuth2ClientCredentials,
    RateLimiter,
    RetryPolicy,
    parse_retry_after,
    redact_url,
)
from tests.connectors.server import Reply, ScriptedServer

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=2.0)
OK = Reply(200, {"ok": True})


def client(server: ScriptedServer, **kwargs: object) -> HttpClient:
    kwargs.setdefault("retry", FAST)
    return HttpClient(server.url, name="test", **kwargs)  # type: ignore[arg-type]


def test_429_waits_for_retry_after_then_succeeds(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/items", Reply(429, {"e": 1}, {"Retry-After": "1"}), OK)
    started = time.monotonic()
    with client(http_server) as http:
        assert http.get_json("/items") == {"ok": True}
    assert time.monotonic() - started >= 0.95
    assert len(http_server.calls("/items")) == 2


def test_retry_after_as_http_date(http_server: ScriptedServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    http_server.script("GET", "/items", Reply(503, {}, {"Retry-After": when}), OK)
    started = time.monotonic()
    with client(http_server) as http:
        assert http.get_json("/items") == {"ok": True}
    assert time.monotonic() - started >= 0.5


def test_5xx_is_retried_then_succeeds(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/items", Reply(500), Reply(502), OK)
    with client(http_server) as http:
        assert http.get_json("/items") == {"ok": True}
    assert len(http_server.calls("/items")) == 3


def test_persistent_5xx_gives_a_clear_transient_error(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/items", Reply(503, {"down": True}))
    with client(http_server) as http, pytest.raises(SourceUnavailableError) as caught:
        http.get_json("/items")
    assert caught.value.transient
    assert "503" in str(caught.value) and "3 attempts" in str(caught.value)
    assert len(http_server.calls("/items")) == 3


def test_timeout_is_retried(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/slow", Reply(200, {"late": 1}, delay=1.0), OK)
    with client(http_server, timeout=0.2) as http:
        assert http.get_json("/slow") == {"ok": True}


def test_persistent_timeouts_fail_transient(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/slow", Reply(200, {}, delay=0.6))
    with client(http_server, timeout=0.15) as http, pytest.raises(SourceUnavailableError) as e:
        http.get_json("/slow")
    assert "timed out" in str(e.value)


def test_malformed_json_is_retried_then_fails_clearly(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/bad", Reply(200, "{not json"), OK)
    with client(http_server) as http:
        assert http.get_json("/bad") == {"ok": True}
    http_server.script("GET", "/worse", Reply(200, "<html>oops</html>"))
    with client(http_server) as http, pytest.raises(SourceUnavailableError) as caught:
        http.get_json("/worse")
    assert "not JSON" in str(caught.value)


def test_4xx_is_terminal_and_not_retried(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/missing", Reply(404, {"error": "nope"}))
    with client(http_server) as http, pytest.raises(SourceRequestError) as caught:
        http.get_json("/missing")
    assert not caught.value.transient
    assert caught.value.status == 404
    assert len(http_server.calls("/missing")) == 1


def test_api_key_and_bearer_auth(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/me", OK)
    with client(http_server, auth=ApiKeyAuth("k-123", name="api_access_token")) as http:
        http.get_json("/me")
    assert http_server.requests[-1].headers["api_access_token"] == "k-123"
    with client(http_server, auth=ApiKeyAuth("q-1", name="api_key", where="query")) as http:
        http.get_json("/me")
    assert http_server.requests[-1].query["api_key"] == ["q-1"]
    with client(http_server, auth=BearerAuth("t-9")) as http:
        http.get_json("/me")
    assert http_server.requests[-1].headers["authorization"] == "Bearer t-9"


def test_oauth2_client_credentials_fetches_caches_and_refreshes(
    http_server: ScriptedServer,
) -> None:
    issued = iter(["tok-1", "tok-2", "tok-3"])
    http_server.route(
        "POST",
        "/oauth/token",
        lambda seen: Reply(200, {"access_token": next(issued), "expires_in": 3600}),
    )
    http_server.route(
        "GET",
        "/data",
        lambda seen: (
            OK
            if seen.headers.get("authorization") == "Bearer tok-2"
            or (
                seen.headers.get("authorization") == "Bearer tok-1"
                and len(http_server.calls("/data")) < 3
            )
            else Reply(401, {})
        ),
    )
    auth = OAuth2ClientCredentials(
        f"{http_server.url}/oauth/token", "client", "s3cret", scope="read"
    )
    with client(http_server, auth=auth) as http:
        http.get_json("/data")
        http.get_json("/data")  # cached token
        assert len(http_server.calls("/oauth/token")) == 1
        http.get_json("/data")  # 401: refreshed once
    token_call = http_server.calls("/oauth/token")[0]
    assert b"grant_type=client_credentials" in token_call.body
    assert token_call.headers["authorization"].startswith("Basic ")
    assert len(http_server.calls("/oauth/token")) == 2
    assert "s3cret" not in repr(auth)


def test_rate_limit_spaces_requests(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/items", OK)
    started = time.monotonic()
    with client(http_server, rate_limit=RateLimiter(rate=20, burst=1)) as http:
        for _ in range(6):
            http.get_json("/items")
    assert time.monotonic() - started >= 0.2


def test_circuit_breaker_opens_and_is_not_retried(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/items", Reply(500))
    breaker = CircuitBreaker(failure_threshold=2, reset_after=60)
    with client(http_server, breaker=breaker) as http:
        with pytest.raises(SourceUnavailableError):
            http.get_json("/items")
        calls = len(http_server.calls("/items"))
        assert breaker.state == "open"
        with pytest.raises(CircuitOpenError) as caught:
            http.get_json("/items")
        assert len(http_server.calls("/items")) == calls  # refused locally
        assert caught.value.transient


def test_circuit_breaker_half_opens_and_closes_on_success(http_server: ScriptedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after=0.05)
    http_server.script("GET", "/items", Reply(500), OK)
    with client(http_server, breaker=breaker, retry=RetryPolicy(attempts=1)) as http:
        with pytest.raises(SourceUnavailableError):
            http.get_json("/items")
        deadline = time.monotonic() + 5
        while breaker.state == "open" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http.get_json("/items") == {"ok": True}
    assert breaker.state == "closed"


def test_logs_redact_secrets(http_server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    http_server.script("GET", "/me", OK)
    caplog.set_level(logging.DEBUG, logger="dictamesh.connectors.http")
    with client(http_server, auth=ApiKeyAuth("super-secret-key", name="api_access_token")) as h:
        h.get_json("/me", params={"token": "query-secret", "page": 2})
        assert "super-secret-key" not in repr(h)
    text = caplog.text
    assert "super-secret-key" not in text and "query-secret" not in text
    assert "***" in text and "page=2" in text


def test_error_messages_carry_no_secret(http_server: ScriptedServer) -> None:
    http_server.script("GET", "/x", Reply(401, {"error": "bad token"}))
    with (
        client(http_server, auth=BearerAuth("never-show-me")) as http,
        pytest.raises(SourceRequestError) as caught,
    ):
        http.get_json("/x", params={"api_key": "hide-me-too"})
    assert "never-show-me" not in str(caught.value)
    assert "hide-me-too" not in str(caught.value)
    assert "credentials" in str(caught.value)


def test_redact_url() -> None:
    assert redact_url("https://u:p@h/x?api_key=1&q=2") == "https://***@h/x?api_key=***&q=2"


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == float(seconds)


def test_retry_after_date_and_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(days=1), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_retry_after_is_capped() -> None:
    assert RetryPolicy(max_wait=5).wait(1, 3600) == 5
