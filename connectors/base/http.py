"""The HTTP toolkit every HTTP connector uses: httpx with retries, rate limit, auth, breaker.

- Retries (tenacity) with exponential backoff and jitter on transient failures: connection
  errors, timeouts, 429, 5xx and bodies that are not the JSON they claim to be. A ``Retry-After``
  header (seconds or an HTTP date) sets the wait instead, capped by ``RetryPolicy.max_wait``.
- Terminal failures (other 4xx) raise `SourceRequestError` at once.
- A token-bucket `RateLimiter` spaces requests; a `CircuitBreaker` refuses calls for a while after
  repeated failures so a sick source is not hammered.
- Auth: `ApiKeyAuth` (header or query), `BearerAuth`, `OAuth2ClientCredentials` (token fetched,
  cached and refreshed on expiry or 401).
- Requests and responses are logged at DEBUG with secrets redacted: credentials never reach logs,
  reprs or exception messages.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from connectors.base.errors import CircuitOpenError, SourceRequestError, SourceUnavailableError

log = logging.getLogger("dictamesh.connectors.http")

REDACTED = "***"
_SECRET_WORDS = (
    "auth",
    "token",
    "key",
    "secret",
    "password",
    "cookie",
    "signature",
    "session",
    "credential",
)


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_headers(headers: Mapping[str, str] | httpx.Headers) -> dict[str, str]:
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in headers.items()}


def redact_url(url: httpx.URL | str) -> str:
    """The URL with credentials in userinfo and secret-looking query parameters masked."""
    parsed = httpx.URL(str(url))
    if parsed.userinfo:
        parsed = parsed.copy_with(username=REDACTED, password=None)
    if not parsed.query:
        return str(parsed)
    query = urllib.parse.urlencode(
        [(k, REDACTED if is_secret_name(k) else v) for k, v in parsed.params.multi_items()],
        safe="*",
    )
    return f"{parsed.copy_with(query=None)}?{query}"


# -- auth -------------------------------------------------------------------------------------


class ApiKeyAuth(httpx.Auth):
    """An API key in a header (``api_access_token: ...``) or a query parameter."""

    def __init__(self, key: SecretStr | str, *, name: str = "X-API-Key", where: str = "header"):
        if where not in {"header", "query"}:
            raise ValueError(f"where={where!r} must be 'header' or 'query'")
        self.key = key if isinstance(key, SecretStr) else SecretStr(key)
        self.name = name
        self.where = where

    def __repr__(self) -> str:
        return f"ApiKeyAuth(name={self.name!r}, where={self.where!r}, key={REDACTED})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.where == "header":
            request.headers[self.name] = self.key.get_secret_value()
        else:
            request.url = request.url.copy_merge_params({self.name: self.key.get_secret_value()})
        yield request


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: SecretStr | str) -> None:
        self.token = token if isinstance(token, SecretStr) else SecretStr(token)

    def __repr__(self) -> str:
        return f"BearerAuth(token={REDACTED})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        yield request


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4): a token fetched, cached, refreshed."""

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr | str,
        *,
        scope: str | None = None,
        leeway: float = 30.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.scope = scope
        self.leeway = leeway
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"client_secret={REDACTED})"
        )

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        pair = f"{self.client_id}:{self.client_secret.get_secret_value()}".encode()
        return httpx.Request(
            "POST",
            self.token_url,
            data=form,
            headers={
                "Accept": "application/json",
                "Authorization": f"Basic {base64.b64encode(pair).decode()}",
            },
        )

    def _store(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise SourceRequestError(
                f"The token endpoint {redact_url(self.token_url)} answered {response.status_code}.",
                status=response.status_code,
                remedy="check the client id and secret of the connector.",
            )
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise SourceRequestError(
                f"The token endpoint {redact_url(self.token_url)} did not return an access_token.",
                remedy="check token_url.",
            ) from None
        self._token = token
        self._expires_at = time.monotonic() + float(body.get("expires_in", 3600)) - self.leeway

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or time.monotonic() >= self._expires_at:
            self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:  # revoked early: fetch a new token once
            self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


# -- rate limit and circuit breaker -----------------------------------------------------------


class RateLimiter:
    """A token bucket: `rate` requests per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError(f"rate={rate} must be positive")
        self.rate = rate
        self.burst = max(burst, 1)
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate}/s, burst={self.burst})"

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return waited
                delay = (1 - self._tokens) / self.rate
            time.sleep(delay)
            waited += delay


class CircuitBreaker:
    """Closed -> open after `failure_threshold` failures in a row; half-open after `reset_after`."""

    def __init__(self, failure_threshold: int = 5, reset_after: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self.failures})"

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if time.monotonic() - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def before(self, target: str) -> None:
        if self.state == "open" and self._opened_at is not None:
            left = self.reset_after - (time.monotonic() - self._opened_at)
            raise CircuitOpenError(
                f"{target} failed {self.failures} times in a row; calls are paused for "
                f"{left:.0f} s more.",
                remedy="check the source's health; the breaker closes after its first success.",
            )

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self._opened_at = None

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.failure_threshold or self._opened_at is not None:
                self._opened_at = time.monotonic()


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures."""

    attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.25

    def wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        backoff = self.initial_wait * (2 ** max(attempt - 1, 0))
        jitter = 1 + random.uniform(0, self.jitter)  # noqa: S311 - jitter, not crypto
        return float(min(backoff * jitter, self.max_wait))


class _Retryable(SourceUnavailableError):
    """A transient failure that carries the source's Retry-After, if it sent one."""

    def __init__(self, message: str, *, status: int | None, retry_after: float | None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


class HttpClient:
    """A JSON-over-HTTP client with the toolkit's retries, rate limit, breaker and redaction."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "source",
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        rate_limit: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        transport: httpx.BaseTransport | None = None,
        on_response: Iterable[Callable[[httpx.Response], None]] = (),
    ) -> None:
        self.name = name
        self.retry = retry or RetryPolicy()
        self.rate_limit = rate_limit
        self.breaker = breaker or CircuitBreaker()
        self.on_response = list(on_response)
        self._client = httpx.Client(
            base_url=base_url,
            auth=auth,
            headers={"Accept": "application/json", **(headers or {})},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"HttpClient(name={self.name!r}, base_url={redact_url(self._client.base_url)!r})"

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send with retries; return a 2xx response or raise a transient/terminal error."""
        return self._retrying(lambda: self._send(method, path, params, json, headers, False))[0]

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Like `request`, and parse the body as JSON (a broken body is retried too)."""
        return self._retrying(lambda: self._send(method, path, params, json, headers, True))[1]

    def fetch(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> tuple[httpx.Response, Any]:
        """The response and its parsed JSON body (headers such as ``Link`` stay readable)."""
        return self._retrying(lambda: self._send(method, path, params, json, None, True))

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)

    def _retrying(
        self, call: Callable[[], tuple[httpx.Response, Any]]
    ) -> tuple[httpx.Response, Any]:
        policy = self.retry

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, _Retryable) else None
            return policy.wait(state.attempt_number, retry_after)

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait,
            retry=retry_if_exception(
                lambda e: (
                    isinstance(e, SourceUnavailableError) and not isinstance(e, CircuitOpenError)
                )
            ),
            reraise=True,
        )
        try:
            result: tuple[httpx.Response, Any] = retrying(call)
        except _Retryable as exc:
            raise SourceUnavailableError(
                f"{exc.message} Gave up after {policy.attempts} attempts.", status=exc.status
            ) from None
        return result

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str] | None,
        parse: bool,
    ) -> tuple[httpx.Response, Any]:
        target = f"{self.name} {method} {redact_url(self._client.base_url.join(path))}"
        self.breaker.before(target)
        if self.rate_limit is not None:
            self.rate_limit.acquire()
        started = time.monotonic()
        try:
            response = self._client.request(
                method, path, params=_clean(params), json=body, headers=headers
            )
        except httpx.TimeoutException as exc:
            self.breaker.failure()
            raise _Retryable(
                f"{target} timed out ({type(exc).__name__}).", status=None, retry_after=None
            ) from None
        except httpx.TransportError as exc:
            self.breaker.failure()
            raise _Retryable(
                f"{target} failed: {type(exc).__name__}.", status=None, retry_after=None
            ) from None
        elapsed = (time.monotonic() - started) * 1000
        log.debug(
            "%s %s -> %s in %.0f ms; request headers %s",
            method,
            redact_url(response.request.url),
            response.status_code,
            elapsed,
            redact_headers(response.request.headers),
        )
        for hook in self.on_response:
            hook(response)
        status = response.status_code
        if status == 429 or status >= 500:
            self.breaker.failure()
            raise _Retryable(
                f"{target} answered {status}.",
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 400:
            self.breaker.success()  # the source is up; the request was wrong
            raise SourceRequestError(
                f"{target} answered {status}: {_excerpt(response)}",
                status=status,
                remedy=_remedy(status),
            )
        if not parse:
            self.breaker.success()
            return response, None
        if status == 204 or not response.content:
            self.breaker.success()
            return response, None
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            self.breaker.failure()
            raise _Retryable(
                f"{target} answered {status} with a body that is not JSON: {_excerpt(response)}",
                status=status,
                retry_after=None,
            ) from None
        self.breaker.success()
        return response, document


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v for k, v in params.items() if v is not None}


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    text = response.text[:limit].replace("\n", " ")
    return text + ("..." if len(response.text) > limit else "")


def _remedy(status: int) -> str:
    if status in {401, 403}:
        return "check the connector's credentials and their permissions."
    if status == 404:
        return "check the base URL and the ids in the connector's configuration."
    return "check the request the connector sends against the source's API documentation."
