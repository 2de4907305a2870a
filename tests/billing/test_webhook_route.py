"""``POST /billing/webhooks/stripe`` on a served `dictamesh serve`: signed deliveries pay
invoices once; forged, stale, oversized and unsigned ones change nothing."""

from __future__ import annotations

import getpass
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text

from tests.helpers import BIN, free_port, wait_for_port
from workbench.api.billing_webhooks import SECRET_KEY
from workbench.billing.webhooks import sign
from workbench.config import SYSTEM

pytestmark = pytest.mark.stack

SECRET = f"whsec_route_{uuid.uuid4().hex}"
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _serve(log: Path, **env: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DICTAMESH_BILLING_")}
    process = subprocess.Popen(
        [str(BIN / "dictamesh"), "serve", "--port", str(port), "--no-consumers"],
        env={**inherited, "DICTAMESH_DASHBOARD_USERS": "ada:correct-horse-battery", **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_port(port, process=process, timeout=120)
    return process, f"http://127.0.0.1:{port}/billing/webhooks/stripe"


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stripe-route") / "serve.log"


@pytest.fixture(scope="module")
def endpoint(workbench: Any, server_log: Path) -> Iterator[str]:
    """A server whose signing secret is the setting (its configuration environment is absent)."""
    process, url = _serve(
        server_log,
        DICTAMESH_BILLING_STRIPE_WEBHOOK_SECRET=SECRET,
        DICTAMESH_BILLING_CONFIG_ENVIRONMENT=f"absent-{uuid.uuid4().hex[:6]}",
    )
    try:
        yield url
    finally:
        _stop(process)


@pytest.fixture
def invoice(workbench: Any) -> Any:
    """An open invoice of 100.00 EUR."""
    billing = workbench.billing
    org = f"hook{uuid.uuid4().hex[:8]}"
    billing.create_organization(org, "Hooked", "EUR", invoice_prefix=org.upper())
    billing.create_plan(org, "pro", "Pro", amount=Decimal(100), currency="EUR")
    billing.create_customer(org, "cus_hook", "Hook", currency="EUR")
    sub = billing.subscribe(org, "cus_hook", "pro", at=T0)
    issued = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))
    assert issued[0].status == "open" and issued[0].amount_due == Decimal("100.00")
    return issued[0]


def _event(invoice_id: uuid.UUID, kind: str = "payment_intent.succeeded") -> bytes:
    return orjson.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": kind,
            "data": {
                "object": {
                    "id": f"pi_{uuid.uuid4().hex[:10]}",
                    "amount_received": 10000,
                    "amount": 10000,
                    "metadata": {"invoice_id": str(invoice_id)},
                }
            },
        }
    )


def _post(url: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return httpx.post(url, content=body, headers=headers, timeout=30)


def _recorded(workbench: Any, body: bytes) -> int:
    with workbench.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM dictamesh_billing_webhook_events WHERE provider = "
                    "'stripe' AND event_id = :id"
                ),
                {"id": orjson.loads(body)["id"]},
            ).scalar_one()
        )


def test_a_signed_payment_marks_the_invoice_paid_once(
    endpoint: str, invoice: Any, workbench: Any, server_log: Path
) -> None:
    body = _event(invoice.id)
    signature = sign(body, SECRET)
    first = _post(endpoint, body, signature)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "received": True,
        "result": "applied",
        "event": orjson.loads(body)["id"],
        "type": "payment_intent.succeeded",
    }
    paid = workbench.billing.invoice(invoice.id)
    assert paid.status == "paid" and paid.amount_paid == Decimal("100.00")

    again = _post(endpoint, body, signature)  # the provider retries the same delivery
    assert again.status_code == 200 and again.json()["result"] == "duplicate"
    assert workbench.billing.payments(invoice.id).height == 1
    assert workbench.billing.invoice(invoice.id).amount_paid == Decimal("100.00")

    log = server_log.read_text()
    assert "stripe webhook" in log
    assert SECRET not in log and signature.split("v1=")[1] not in log


def test_forged_stale_and_unsigned_deliveries_change_nothing(
    endpoint: str, invoice: Any, workbench: Any, server_log: Path
) -> None:
    body = _event(invoice.id)
    forged = _post(endpoint, body, sign(body, "whsec_guessed"))
    assert forged.status_code == 401 and "does not match" in forged.json()["error"]
    tampered = _post(endpoint, body.replace(b"10000", b"99999"), sign(body, SECRET))
    assert tampered.status_code == 401
    stale = _post(endpoint, body, sign(body, SECRET, timestamp=int(time.time()) - 3600))
    assert stale.status_code == 401 and "away from now" in stale.json()["error"]
    unsigned = _post(endpoint, body, None)
    assert unsigned.status_code == 401 and "no Stripe-Signature" in unsigned.json()["error"]
    garbled = _post(endpoint, body, "t=abc,v9=zzz")
    assert garbled.status_code == 401 and "malformed" in garbled.json()["error"]

    unchanged = workbench.billing.invoice(invoice.id)
    assert unchanged.status == "open" and unchanged.amount_paid == 0
    assert workbench.billing.payments(invoice.id).height == 0
    assert _recorded(workbench, body) == 0  # so a genuine delivery of the event still applies
    genuine = _post(endpoint, body, sign(body, SECRET))
    assert genuine.status_code == 200 and genuine.json()["result"] == "applied"
    assert SECRET not in server_log.read_text()


def test_oversized_and_malformed_bodies(endpoint: str, invoice: Any, workbench: Any) -> None:
    huge = b'{"id": "evt_huge", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    oversized = _post(endpoint, huge, sign(huge, SECRET))
    assert oversized.status_code == 413 and "limited to" in oversized.json()["error"]

    not_json = b"this is not an event"
    bad = _post(endpoint, not_json, sign(not_json, SECRET))
    assert bad.status_code == 400 and "not a Stripe event" in bad.json()["error"]

    weird_amount = _event(invoice.id).replace(b'"amount_received":10000', b'"amount_received":"1"')
    rejected = _post(endpoint, weird_amount, sign(weird_amount, SECRET))
    assert rejected.status_code == 400 and "amount_received" in rejected.json()["error"]
    assert _recorded(workbench, weird_amount) == 0

    unknown = _event(uuid.uuid4())
    missing = _post(endpoint, unknown, sign(unknown, SECRET))
    assert missing.status_code == 422 and "is not an invoice" in missing.json()["error"]

    other = orjson.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "customer.created"})
    ignored = _post(endpoint, other, sign(other, SECRET))
    assert ignored.status_code == 200 and ignored.json()["result"] == "ignored"
    assert workbench.billing.invoice(invoice.id).status == "open"


def test_without_a_secret_nothing_is_accepted_until_one_is_configured(
    workbench: Any, invoice: Any, tmp_path: Path
) -> None:
    environment = f"hooks-{uuid.uuid4().hex[:6]}"
    admin = workbench.config.as_actor(SYSTEM)
    admin.add_environment(environment, description="webhook route test")
    process, url = _serve(tmp_path / "serve.log", DICTAMESH_BILLING_CONFIG_ENVIRONMENT=environment)
    try:
        body = _event(invoice.id)
        refused = _post(url, body, sign(body, SECRET))
        assert refused.status_code == 503
        answer = refused.json()
        assert "No signing secret is configured" in answer["error"]
        assert SECRET_KEY in answer["remedy"] and environment in answer["remedy"]
        assert "DICTAMESH_BILLING_STRIPE_WEBHOOK_SECRET" in answer["remedy"]
        assert workbench.billing.invoice(invoice.id).status == "open"
        assert _recorded(workbench, body) == 0

        # The configuration service's secret is used without a restart.
        secret = f"whsec_config_{uuid.uuid4().hex}"
        admin.set(SECRET_KEY, secret, environment=environment, secret=True)
        denied = _post(url, body, sign(body, secret))
        assert denied.status_code == 503 and "may not read secret" in denied.json()["error"]
        admin.grant(getpass.getuser(), "secrets:read", keys=SECRET_KEY, environments=environment)
        accepted = _post(url, body, sign(body, secret))
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["result"] == "applied"
        assert workbench.billing.invoice(invoice.id).status == "paid"
        log = (tmp_path / "serve.log").read_text()
        assert secret not in log
    finally:
        _stop(process)
