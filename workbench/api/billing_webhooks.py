"""``POST /billing/webhooks/stripe``: Stripe-style payment webhooks applied to invoices.

No dashboard login: the payment provider cannot log in. Each delivery is verified instead
(``Stripe-Signature: t=...,v1=...``, HMAC-SHA256 of ``"<t>.<raw body>"`` with the endpoint's
signing secret, at most five minutes old) and applied once per event id
(`workbench.billing.webhooks.handle_stripe_webhook`). The invoice is named by
``data.object.metadata.invoice_id``, so one endpoint serves every organization.

The signing secret is the configuration service's ``billing.stripe.webhook_secret`` in the
environment ``DICTAMESH_BILLING_CONFIG_ENVIRONMENT`` when it holds one, else the setting
``DICTAMESH_BILLING_STRIPE_WEBHOOK_SECRET``. With neither, every delivery is answered 503: an
unsigned delivery is never accepted.

Answers: 200 ``{"received": true, "result": "applied" | "duplicate" | "ignored", ...}``; 400 for
a body that is not a Stripe event; 401 when the signature is missing, wrong or too old; 413 for
a body over the size limit; 422 for an event the workbench cannot apply (an unknown invoice);
503 with no secret configured or the database unavailable (the provider retries). Neither the
secret nor the signature is ever logged or answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr
from sqlalchemy.exc import DataError

from workbench.api.webhooks import DeliveryHandler
from workbench.errors import DictaMeshError, TransientError, UnknownNameError
from workbench.observability import get_logger

if TYPE_CHECKING:
    from workbench.client import Workbench
    from workbench.settings import Settings

PATTERN = r"/billing/webhooks/stripe"
SECRET_KEY = "billing.stripe.webhook_secret"  # noqa: S105 - the key's name, not a secret
SECRET_TTL_SECONDS = 30.0
log = get_logger(__name__)

# Reads one key of the configuration service: (key, environment) -> plain value.
ConfigLookup = Callable[[str, str], Any]


class SigningSecretUnavailable(TransientError):
    """No signing secret can be had (none configured, or not readable); deliveries wait."""


class SigningSecret:
    """The endpoint's signing secret, looked up per delivery and reused briefly once found.

    The configuration service comes first (`SECRET_KEY` in `environment`), then `fallback`
    (the setting). Only a found secret is cached, for `ttl` seconds: configuring or rotating
    it takes effect without a restart.
    """

    def __init__(
        self,
        lookup: ConfigLookup | None,
        fallback: SecretStr | None,
        *,
        environment: str,
        ttl: float = SECRET_TTL_SECONDS,
    ) -> None:
        self._lookup = lookup
        self._fallback = fallback
        self.environment = environment
        self.ttl = ttl
        self._cached: tuple[float, SecretStr] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_workbench(cls, settings: Settings, workbench: Workbench) -> SigningSecret:
        def lookup(key: str, environment: str) -> Any:
            return workbench.config.reveal(key, environment=environment)

        return cls(
            lookup,
            settings.billing_stripe_webhook_secret,
            environment=settings.billing_config_environment,
        )

    def __repr__(self) -> str:
        return (
            f"SigningSecret(config {SECRET_KEY!r} in {self.environment!r}, "
            f"setting {'set' if self._fallback else 'unset'})"
        )

    def get(self) -> str:
        """The secret; `SigningSecretUnavailable` (with how to configure it) when there is none."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1].get_secret_value()
        found = self._from_config()
        if found is None and self._fallback is not None and self._fallback.get_secret_value():
            found = self._fallback.get_secret_value()
        if found is None:
            raise SigningSecretUnavailable(
                "No signing secret is configured for POST /billing/webhooks/stripe, so "
                "deliveries cannot be verified and none is accepted.",
                remedy=f"store the provider's endpoint secret as the secret {SECRET_KEY!r} in "
                f"the configuration environment {self.environment!r} (`dictamesh config set "
                f"{SECRET_KEY} - --env {self.environment} --secret --string` reads it from "
                "stdin), or set DICTAMESH_BILLING_STRIPE_WEBHOOK_SECRET and restart the server.",
            )
        with self._lock:
            self._cached = (time.monotonic(), SecretStr(found))
        return found

    def _from_config(self) -> str | None:
        if self._lookup is None:
            return None
        from workbench.config.model import NotFoundError, PermissionDeniedError

        try:
            value = self._lookup(SECRET_KEY, self.environment)
        except (NotFoundError, UnknownNameError):
            return None  # the key, or the environment, is not there: fall back to the setting
        except PermissionDeniedError as exc:
            raise SigningSecretUnavailable(exc.message, remedy=exc.remedy) from None
        except DictaMeshError as exc:
            if exc.transient:
                raise
            raise SigningSecretUnavailable(
                f"The signing secret {SECRET_KEY!r} could not be read from the configuration "
                f"service ({type(exc).__name__}).",
                remedy=exc.remedy or "check the configuration service and its master key.",
            ) from None
        if value is None or not str(value):
            return None
        return str(value)


class StripeWebhookHandler(DeliveryHandler):
    def initialize(self, workbench: Workbench, secret: SigningSecret) -> None:
        self.workbench = workbench
        self.secret = secret

    def refused_errors(self) -> tuple[type[Exception], ...]:
        from workbench.billing.webhooks import WebhookSignatureError

        return (WebhookSignatureError,)

    def malformed_errors(self) -> tuple[type[Exception], ...]:
        from workbench.billing.webhooks import WebhookPayloadError

        return (WebhookPayloadError, DataError)

    async def post(self) -> None:
        from workbench.billing.webhooks import handle_stripe_webhook

        self.check_size()
        body = self.request.body
        header = self.request.headers.get("Stripe-Signature")
        secret = await self.deliver(self.secret.get)
        result = await self.deliver(
            lambda: handle_stripe_webhook(self.workbench.billing, body, header, secret)
        )
        event = orjson.loads(body)  # verified and parsed by the handler already
        log.info(
            "stripe webhook", result=result, event_id=str(event["id"]), type=str(event["type"])
        )
        self._answer(
            200,
            {
                "received": True,
                "result": result,
                "event": str(event["id"]),
                "type": str(event["type"]),
            },
        )
