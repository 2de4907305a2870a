"""``POST /webhooks/<instance>``: a webhook-capable connector's deliveries become events.

No dashboard login here: the source system cannot log in. The connector verifies each delivery
instead (Chatwoot: the HMAC signature of the webhook's secret over timestamp and body) and only
a verified delivery is published. Answers: 202 with the events published, 401 when the
verification fails, 404 for an unknown instance or one without webhooks, 503 when publishing
failed transiently (the source retries).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import tornado.web

from workbench.errors import DictaMeshError, UnknownNameError

if TYPE_CHECKING:
    from workbench.client import Workbench

MAX_BODY = 2 * 1024 * 1024
PATTERN = r"/webhooks/([A-Za-z0-9_-]{1,100})"


class WebhookHandler(tornado.web.RequestHandler):
    def initialize(self, workbench: Workbench) -> None:
        self.workbench = workbench

    def check_xsrf_cookie(self) -> None:
        """Deliveries come from other systems and are verified by signature, not by cookie."""

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def post(self, instance: str) -> None:
        from connectors.base.capabilities import Capability
        from connectors.base.errors import WebhookVerificationError

        if len(self.request.body) > MAX_BODY:
            self._answer(413, {"error": f"deliveries are limited to {MAX_BODY} bytes"})
            return
        try:
            handle = self.workbench.connectors[instance]
            supported = Capability.WEBHOOKS.value in handle.capabilities
        except UnknownNameError as exc:
            self._answer(404, {"error": exc.message})
            return
        if not supported:
            self._answer(404, {"error": f"connector instance {instance!r} takes no webhooks"})
            return
        body = self.request.body
        headers = dict(self.request.headers.items())

        def publish() -> list[Any]:
            handles = handle.receive_webhook(body, headers)
            for published in handles:
                published.delivered(30)
            return handles

        try:
            handles = await asyncio.get_running_loop().run_in_executor(None, publish)
        except WebhookVerificationError as exc:
            self._answer(401, {"error": exc.message})
            return
        except DictaMeshError as exc:
            self._answer(503 if exc.transient else 422, {"error": exc.message})
            return
        self._answer(
            202,
            {
                "event": handles[0].event.type if handles else None,
                "published": [h.event.id for h in handles],
            },
        )
