"""``POST /webhooks/<instance>``: a webhook-capable connector's deliveries become events.

No dashboard login here: the source system cannot log in. The connector verifies each delivery
instead (Chatwoot: the HMAC signature of the webhook's secret over timestamp and body) and only
a verified delivery is published. Answers: 202 with the events published, 401 when the
verification fails, 404 for an unknown instance or one without webhooks, 503 when publishing
failed transiently (the source retries).

`DeliveryHandler` is what every endpoint that other systems post to shares (this one and
``/billing/webhooks/stripe``): no login and no XSRF cookie, a body size limit, JSON answers,
the blocking work off the event loop, and one mapping of failures to status codes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from sqlalchemy.exc import InterfaceError, OperationalError

from workbench.errors import DictaMeshError, UnknownNameError
from workbench.observability import get_logger

if TYPE_CHECKING:
    from workbench.client import Workbench

MAX_BODY = 2 * 1024 * 1024
PATTERN = r"/webhooks/([A-Za-z0-9_-]{1,100})"
T = TypeVar("T")
log = get_logger(__name__)


class DeliveryHandler(tornado.web.RequestHandler):
    """Base of the endpoints other systems deliver to; they verify signatures, not logins.

    `deliver` runs the blocking work in a thread and maps its failures: an error of
    `refused_errors` (a failed verification) -> 401, of `malformed_errors` -> 400, another
    transient workbench error or a database outage -> 503 (the sender retries), another
    workbench error -> 422. Messages are the errors' own, which never carry secrets.
    """

    max_body = MAX_BODY

    def check_xsrf_cookie(self) -> None:
        """Deliveries come from other systems and are verified by signature, not by cookie."""

    def refused_errors(self) -> tuple[type[Exception], ...]:
        return ()

    def malformed_errors(self) -> tuple[type[Exception], ...]:
        return ()

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def stop(self, status: int, body: dict[str, Any]) -> tornado.web.Finish:
        """Answer now; ``raise self.stop(...)`` ends the request."""
        self._answer(status, body)
        return tornado.web.Finish()

    def check_size(self) -> None:
        if len(self.request.body) > self.max_body:
            raise self.stop(413, {"error": f"deliveries are limited to {self.max_body} bytes"})

    async def deliver(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread; a failure is answered here and ends the request."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, work)
        except self.refused_errors() as exc:
            raise self._failed(401, exc) from None
        except self.malformed_errors() as exc:
            raise self._failed(400, exc) from None
        except DictaMeshError as exc:
            raise self._failed(503 if exc.transient else 422, exc) from None
        except (OperationalError, InterfaceError) as exc:
            log.warning("delivery postponed", path=self.request.path, error="database unavailable")
            raise self.stop(
                503, {"error": f"the database is unavailable ({type(exc).__name__}); retry later"}
            ) from None

    def _failed(self, status: int, exc: Exception) -> tornado.web.Finish:
        if isinstance(exc, DictaMeshError):
            body = {"error": exc.message}
            if exc.remedy:
                body["remedy"] = exc.remedy
        else:  # a driver error: its class only, the text may quote the body
            body = {"error": f"the delivery was refused ({type(exc).__name__})"}
        log.warning("delivery refused", path=self.request.path, status=status, error=body["error"])
        return self.stop(status, body)


class WebhookHandler(DeliveryHandler):
    def initialize(self, workbench: Workbench) -> None:
        self.workbench = workbench

    def refused_errors(self) -> tuple[type[Exception], ...]:
        from connectors.base.errors import WebhookVerificationError

        return (WebhookVerificationError,)

    async def post(self, instance: str) -> None:
        from connectors.base.capabilities import Capability

        self.check_size()
        try:
            handle = self.workbench.connectors[instance]
            supported = Capability.WEBHOOKS.value in handle.capabilities
        except UnknownNameError as exc:
            raise self.stop(404, {"error": exc.message}) from None
        if not supported:
            raise self.stop(404, {"error": f"connector instance {instance!r} takes no webhooks"})
        body = self.request.body
        headers = dict(self.request.headers.items())

        def publish() -> list[Any]:
            handles = handle.receive_webhook(body, headers)
            for published in handles:
                published.delivered(30)
            return handles

        handles = await self.deliver(publish)
        self._answer(
            202,
            {
                "event": handles[0].event.data["event"] if handles else None,
                "published": [h.event.id for h in handles],
            },
        )
