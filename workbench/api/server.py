"""`dictamesh serve`: the dashboards plus health and metrics endpoints on one Tornado server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING, Any

from workbench.api.auth import Credentials, load_credentials
from workbench.errors import MissingDependencyError
from workbench.observability import HealthReport, get_logger, render_metrics

if TYPE_CHECKING:
    from workbench.client import Workbench
    from workbench.settings import Settings

log = get_logger(__name__)
HEALTH_CACHE_SECONDS = 2.0

try:
    import tornado.web
    from tornado.ioloop import IOLoop

    from workbench.api import billing_webhooks, webhooks
except ImportError as exc:  # pragma: no cover - exercised only on a lean install
    raise MissingDependencyError("`dictamesh serve`", "dashboards", module="panel") from exc


class _HealthCache:
    """Scrapes and page loads share one recent health check instead of each running their own."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench
        self._at = 0.0
        self._reports: list[HealthReport] = []

    def get(self) -> list[HealthReport]:
        if time.monotonic() - self._at > HEALTH_CACHE_SECONDS:
            self._reports = self.workbench.health()
            try:
                self.workbench.lag()  # refreshes the lag gauges
            except Exception as exc:  # lag needs Postgres and the broker; health says which
                log.warning("consumer lag unavailable", error=str(exc))
            self._at = time.monotonic()
        return self._reports


class AuthenticatedHandler(tornado.web.RequestHandler):
    """Refuses any request without a session cookie, API token or Basic credentials."""

    def initialize(self, credentials: Credentials, health: _HealthCache) -> None:
        self.credentials = credentials
        self.health = health

    def principal(self) -> str | None:
        cookie = self.get_secure_cookie("user")
        if cookie:
            return cookie.decode()
        header = self.request.headers.get("Authorization")
        return self.credentials.check_authorization_header(header) if header else None

    def prepare(self) -> None:
        if self.principal() is None:
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Basic realm="dictamesh"')
            self.finish(
                {
                    "error": "authentication required",
                    "remedy": "log in to the dashboards, or send `Authorization: Bearer TOKEN` "
                    "with a token from DICTAMESH_API_TOKENS",
                }
            )

    async def _reports(self) -> list[HealthReport]:
        # Health checks block on the network; keep them off the event loop.
        return await IOLoop.current().run_in_executor(None, self.health.get)


class MetricsHandler(AuthenticatedHandler):
    async def get(self) -> None:
        await self._reports()  # refreshes the component gauges
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.write(render_metrics())


class HealthHandler(AuthenticatedHandler):
    async def get(self) -> None:
        reports = await self._reports()
        healthy = all(r.healthy for r in reports)
        self.set_status(200 if healthy else 503)
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"healthy": healthy, "components": [asdict(r) for r in reports]}))


def _login_provider(credentials: Credentials) -> Any:
    """Panel's login form, checking passwords in constant time and logging each attempt."""
    from panel.auth import BasicAuthProvider, BasicLoginHandler

    class LoginHandler(BasicLoginHandler):
        def _validate(self, username: str, password: str) -> bool:
            ok = credentials.check_password(username, password)
            log.info(
                "dashboard login",
                user=username,
                success=ok,
                address=self.request.remote_ip,
                user_agent=self.request.headers.get("User-Agent", ""),
            )
            return ok

    class Provider(BasicAuthProvider):
        @property
        def login_handler(self) -> type[LoginHandler]:
            LoginHandler._login_endpoint = self._login_endpoint
            LoginHandler._login_template = self._login_template
            return LoginHandler

    return Provider(  # type: ignore[no-untyped-call]
        login_template=str(resources.files("workbench.api") / "templates" / "login.html")
    )


def build_server(
    settings: Settings,
    workbench: Workbench,
    *,
    host: str,
    port: int,
    demo: bool = False,
) -> tuple[Any, Credentials]:
    """A started-on-demand Panel/Bokeh server with every page and endpoint behind the login."""
    import panel as pn

    from workbench.dashboards.layout import APP_TITLE, Page, discover_pages, render

    credentials = load_credentials(settings, demo=demo)
    pages = discover_pages()

    def app_for(page: Page) -> Callable[[], Any]:
        # A plain function: Panel calls functions per session but would render a partial as-is.
        def build_page() -> Any:
            return render(page, pages, workbench)

        return build_page

    apps: dict[str, Any] = {page.slug: app_for(page) for page in pages}
    health = _HealthCache(workbench)
    handler_args = {"credentials": credentials, "health": health}
    extra_patterns = [
        (r"/", tornado.web.RedirectHandler, {"url": f"/{pages[0].slug}"}),
        (r"/metrics", MetricsHandler, handler_args),
        (r"/api/health", HealthHandler, handler_args),
        (webhooks.PATTERN, webhooks.WebhookHandler, {"workbench": workbench}),
        (
            billing_webhooks.PATTERN,
            billing_webhooks.StripeWebhookHandler,
            {
                "workbench": workbench,
                "secret": billing_webhooks.SigningSecret.for_workbench(settings, workbench),
            },
        ),
    ]
    auth: dict[str, Any]
    if settings.dashboard_auth == "oauth":
        auth = {
            "oauth_provider": settings.oauth_provider,
            "oauth_key": settings.oauth_key,
            "oauth_secret": settings.oauth_secret.get_secret_value()
            if settings.oauth_secret
            else None,
        }
    else:
        auth = {"auth_provider": _login_provider(credentials)}
    origins = sorted(
        {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *settings.serve_origins}
    )
    server = pn.io.server.get_server(
        apps,
        port=port,
        address=host,
        websocket_origin=origins,
        title={page.slug: f"{page.title} · {APP_TITLE}" for page in pages},
        cookie_secret=credentials.cookie_secret,
        extra_patterns=extra_patterns,
        start=False,
        show=False,
        verbose=False,
        **auth,
    )
    return server, credentials


def serve(
    settings: Settings,
    workbench: Workbench,
    *,
    host: str,
    port: int,
    demo: bool = False,
    announce: Callable[[str, Credentials], None] | None = None,
    on_stop: Callable[[], None] | None = None,
    stop_requested: threading.Event | None = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C; then stop the server and call `on_stop`.

    `stop_requested` is set by the caller's own handler for a signal that came before the
    server's loop took over (the port is bound while the server is built).
    """
    import signal

    early = stop_requested
    if early is None:  # a caller passing one has its handler in place already
        early = threading.Event()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, lambda *_: early.set())
    server, credentials = build_server(settings, workbench, host=host, port=port, demo=demo)
    loop = server.io_loop.asyncio_loop
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, server.io_loop.stop)
    if early.is_set():
        loop.call_soon(server.io_loop.stop)
    server.start()
    url = f"http://{'localhost' if host in {'127.0.0.1', '0.0.0.0'} else host}:{server.port}/"  # noqa: S104
    log.info("serving dashboards", url=url, demo=credentials.demo)
    if announce:
        announce(url, credentials)
    try:
        server.io_loop.start()
    finally:
        server.stop()
        if on_stop is not None:
            on_stop()
        log.info("dashboards stopped")
