"""Stripe-style payment webhooks: signature verified, each event applied once.

The ``Stripe-Signature`` header is ``t=<unix seconds>,v1=<hex HMAC-SHA256>``; the signed payload
is ``"<t>.<raw body>"`` keyed with the endpoint's signing secret. Deliveries older than the
tolerance (default 300 s) are refused, so a captured request cannot be replayed later. The event
id is stored with its effect in one transaction: a second delivery changes nothing.

Handled types: ``payment_intent.succeeded`` and ``payment_intent.payment_failed`` (the invoice
is named by ``data.object.metadata.invoice_id``; amounts are in minor units as Stripe sends them),
``charge.refunded``. Other types are recorded and acknowledged. A payment for a draft or void
invoice is refused (`BillingInputError` on ``status``) and nothing of the delivery is stored, so
the provider's retry meets the same answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from decimal import Decimal
from typing import Any, Literal

import orjson
from sqlalchemy import text

from workbench.billing.currencies import minor_units
from workbench.billing.errors import BillingError
from workbench.billing.service import (
    Billing,
    ProviderResult,
    _load_invoice,
    record_payment,
    record_refund,
)
from workbench.errors import TerminalError

TOLERANCE_SECONDS = 300


class WebhookSignatureError(TerminalError):
    """A webhook whose signature is missing, malformed, wrong or too old."""


class WebhookPayloadError(BillingError):
    """A correctly signed webhook whose body is not a Stripe event."""


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for `payload` (used by tests and local tools)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Raise `WebhookSignatureError` unless `header` signs `payload` with `secret`, recently."""
    if not header:
        raise WebhookSignatureError(
            "The webhook has no Stripe-Signature header.",
            remedy="send the header the provider computed; unsigned deliveries are refused.",
        )
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(
            "The Stripe-Signature header is malformed (needs t=... and v1=...).",
            remedy="pass the header exactly as received.",
        )
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookSignatureError(
            f"The webhook was signed {abs(current - timestamp):.0f} s away from now "
            f"(tolerance {tolerance} s).",
            remedy="check the server clock; replayed deliveries are refused.",
        )
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    if not any(hmac.compare_digest(expected.hexdigest(), s) for s in signatures):
        raise WebhookSignatureError(
            "The webhook signature does not match its body.",
            remedy="check the endpoint's signing secret and that the raw body is passed unchanged.",
        )


def handle_stripe_webhook(
    billing: Billing,
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Literal["applied", "duplicate", "ignored"]:
    """Verify and apply one delivery; ``duplicate`` when its event id was seen before."""
    verify_signature(payload, header, secret, tolerance=tolerance, now=now)
    try:
        event = orjson.loads(payload)
        event_id, event_type = str(event["id"]), str(event["type"])
        obj: dict[str, Any] = event.get("data", {}).get("object", {})
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise TypeError("metadata is not an object")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise WebhookPayloadError(
            "The webhook body is not a Stripe event (needs id, type, data.object).",
            remedy="send the event JSON as the provider produced it.",
        ) from None
    pending: list[tuple[str, dict[str, Any]]] = []
    with billing.engine.begin() as conn:
        first = conn.execute(
            text(
                "INSERT INTO dictamesh_billing_webhook_events (provider, event_id, type, payload) "
                "VALUES ('stripe', :id, :type, CAST(:payload AS jsonb)) ON CONFLICT DO NOTHING "
                "RETURNING event_id"
            ),
            {"id": event_id, "type": event_type, "payload": payload.decode()},
        ).scalar_one_or_none()
        if first is None:
            return "duplicate"
        invoice_ref = metadata.get("invoice_id")
        if (
            event_type
            not in (
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.refunded",
            )
            or not invoice_ref
        ):
            return "ignored"
        try:
            invoice_id = uuid.UUID(str(invoice_ref))
        except ValueError:
            raise BillingError(
                f"Webhook {event_id}: metadata.invoice_id {invoice_ref!r} is not an invoice id.",
                remedy="put the workbench invoice id in the payment's metadata.",
            ) from None
        invoice = _load_invoice(conn, invoice_id, lock=True)
        scale = Decimal(1).scaleb(-minor_units(invoice.currency))
        reference = str(obj.get("id") or event_id)
        if event_type == "charge.refunded":
            amount = _minor_amount(obj, "amount_refunded", event_id) * scale
            record_refund(
                conn,
                invoice,
                "stripe",
                event_id,
                amount,
                ProviderResult(True, reference),
                billing,
                pending,
            )
        else:
            succeeded = event_type == "payment_intent.succeeded"
            field = "amount_received" if succeeded else "amount"
            amount = _minor_amount(obj, field, event_id) * scale
            failure = obj.get("last_payment_error") or {}
            error = failure.get("message") if isinstance(failure, dict) else None
            record_payment(
                conn,
                invoice,
                "stripe",
                event_id,
                amount,
                ProviderResult(
                    succeeded, reference, None if succeeded else str(error or "declined")
                ),
                billing,
                pending,
            )
    billing._run_hooks(pending)
    return "applied"


def _minor_amount(obj: dict[str, Any], field: str, event_id: str) -> Decimal:
    """``data.object.<field>``: a whole number of minor units (cents), as Stripe sends amounts."""
    value = obj.get(field, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WebhookPayloadError(
            f"Webhook {event_id}: data.object.{field} = {value!r} is not a whole, non-negative "
            "amount in minor units.",
            remedy="send the event JSON as the provider produced it.",
        )
    return Decimal(value)
