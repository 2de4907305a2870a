"""Billing services on the real embedded stack: subscriptions, usage, invoices, payments, events."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import text

from workbench.billing.errors import BillingError, BillingInputError
from workbench.billing.pricing import Charge, Tier
from workbench.billing.service import (
    INVOICE_TOPIC,
    PAYMENT_TOPIC,
    SUBSCRIPTION_TOPIC,
    USAGE_TOPIC,
    Billing,
    ManualProvider,
    PlanCharge,
)
from workbench.billing.webhooks import WebhookSignatureError, handle_stripe_webhook, sign

pytestmark = pytest.mark.stack
D = Decimal
T0 = datetime(2026, 10, 1, tzinfo=UTC)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def org(billing: Billing) -> str:
    name = f"org{uuid.uuid4().hex[:8]}"
    billing.create_organization(name, "Acme", "EUR", invoice_prefix=name.upper())
    billing.create_metric(name, "api_calls", "sum")
    billing.create_metric(name, "seats", "max")
    billing.create_metric(name, "users", "unique_count", field_name="user")
    billing.create_metric(name, "storage", "latest")
    billing.create_metric(name, "logins", "count")
    tiers = (Tier(D(1000), D("0.01")), Tier(None, D("0.005"), D(2)))
    billing.create_plan(
        name,
        "pro",
        "Pro",
        amount=D(100),
        currency="EUR",
        charges=[PlanCharge("api_calls", Charge("graduated", tiers=tiers), "API calls")],
    )
    billing.create_plan(name, "team", "Team", amount=D(300), currency="EUR")
    return name


def test_usage_is_idempotent_and_aggregated(billing: Billing, org: str) -> None:
    customer = billing.create_customer(org, "cus_1", "One", currency="EUR")
    at = T0 + timedelta(days=1)
    assert billing.record_usage(org, "e1", "cus_1", "api_calls", 700, occurred_at=at)
    assert not billing.record_usage(org, "e1", "cus_1", "api_calls", 700, occurred_at=at)
    assert billing.record_usage(org, "e2", "cus_1", "api_calls", "800.5", occurred_at=at)
    for i, (seats, user) in enumerate([(3, "ann"), (7, "bob"), (5, "ann")]):
        billing.record_usage(
            org, f"s{i}", "cus_1", "seats", seats, occurred_at=at + timedelta(hours=i)
        )
        billing.record_usage(
            org, f"u{i}", "cus_1", "users", occurred_at=at, properties={"user": user}
        )
        billing.record_usage(
            org, f"g{i}", "cus_1", "storage", 10 * (3 - i), occurred_at=at + timedelta(hours=i)
        )
        billing.record_usage(org, f"l{i}", "cus_1", "logins", occurred_at=at)
    end = T0 + timedelta(days=31)
    assert billing.usage(customer, "api_calls", T0, end) == D("1500.5")
    assert billing.usage(customer, "seats", T0, end) == 7
    assert billing.usage(customer, "users", T0, end) == 2
    assert billing.usage(customer, "storage", T0, end) == 10
    assert billing.usage(customer, "logins", T0, end) == 3
    assert billing.usage(customer, "api_calls", end, end + timedelta(days=1)) == 0

    with pytest.raises(BillingInputError) as caught:
        billing.record_usage(org, "e9", "cus_1", "bogus", 1, occurred_at=at)
    assert caught.value.row == "e9"
    assert caught.value.field == "metric"
    with pytest.raises(BillingInputError, match="negative") as negative:
        billing.record_usage(org, "e10", "cus_1", "api_calls", -1, occurred_at=at)
    assert negative.value.field == "value"
    with pytest.raises(BillingInputError, match="not a customer"):
        billing.record_usage(org, "e11", "nobody", "api_calls", 1, occurred_at=at)


def test_invoice_lines_tax_coupon_credit_and_sequential_numbers(billing: Billing, org: str) -> None:
    cus_a = billing.create_customer(org, "cus_a", "A", currency="EUR", credit_balance=D(10))
    billing.set_tax_rates(cus_a, [billing.create_tax_rate(org, "VAT", D(20))])
    billing.create_customer(org, "cus_b", "B", currency="EUR")
    billing.create_coupon(org, "TEN", percent_off=D(10))
    billing.apply_coupon(cus_a, "TEN", at=T0)
    sub_a = billing.subscribe(org, "cus_a", "pro", at=T0)
    billing.subscribe(org, "cus_b", "team", at=T0)
    billing.record_usage(org, "a1", "cus_a", "api_calls", 1500, occurred_at=T0 + timedelta(days=3))
    issued: list[dict[str, Any]] = []
    billing.on("invoice.issued", lambda _type, data: issued.append(data))

    invoices = billing.generate_invoices(org, at=T0 + timedelta(days=31))
    by_customer = {inv.subscription_id: inv for inv in invoices}
    a = by_customer[sub_a]
    # 100 fee + graduated usage: 1000 x 0.01 + 500 x 0.005 + 2 flat = 14.50
    assert [line["amount"] for line in a.lines] == [D("100.00"), D("14.50")]
    assert a.subtotal == D("114.50")
    assert a.discount == D("11.45")
    assert a.tax == D("20.61")
    assert a.total == D("123.66")
    assert a.credits_applied == D(10)
    assert a.amount_due == D("113.66")
    assert a.status == "open"
    assert sorted(inv.number or "" for inv in invoices) == [
        f"{org.upper()}-000001",
        f"{org.upper()}-000002",
    ]
    assert len(issued) == 2

    # the next period continues the sequence; the subscription moved on a period
    sub = billing.subscription(sub_a)
    assert sub["current_period_start"] == datetime(2026, 11, 1, tzinfo=UTC)
    again = billing.generate_invoices(org, subscription_ids=[sub_a], at=T0 + timedelta(days=62))
    assert again[0].number == f"{org.upper()}-000003"
    assert again[0].credits_applied == 0  # the credit was used up

    listing = billing.invoices(org)
    assert listing.height == 3
    assert set(listing["status"]) == {"open"}

    # lifecycle
    voided = billing.transition(again[0].id, "void")
    assert voided.status == "void"
    with pytest.raises(BillingError, match="cannot become open"):
        billing.transition(again[0].id, "open")
    with pytest.raises(BillingError, match="cannot be paid"):
        billing.pay(again[0].id, idempotency_key="k-void")


def test_trial_change_plan_proration_cancel_and_mrr(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_t", "Trial", currency="EUR")
    billing.create_customer(org, "cus_u", "Upgrade", currency="EUR")
    trial = billing.subscribe(org, "cus_t", "pro", at=T0, trial_days=14)
    assert billing.subscription(trial)["status"] == "trialing"
    ending = billing.trials_ending(org, now=T0 + timedelta(days=12))
    assert ending == [trial]

    sub = billing.subscribe(org, "cus_u", "pro", at=T0)
    # upgrade after 10 of 31 days: credit 21/31 of 100, charge 21/31 of 300
    lines = billing.change_plan(sub, "team", at=T0 + timedelta(days=10))
    assert lines == {"credit": D("-67.74"), "charge": D("203.23")}
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    assert [line["kind"] for line in invoice.lines] == ["subscription", "proration", "proration"]
    # billed at the plan the period started on (Pro) and moved to Team from the change on:
    # 10 days of Pro and 21 of Team
    assert invoice.subtotal == D("100.00") - D("67.74") + D("203.23")

    billing.cancel(sub, at=datetime(2026, 11, 15, tzinfo=UTC), at_period_end=True)
    billing.set_fx_rate("EUR", date(2026, 1, 1), D("1.10"))
    analysis = billing.analysis(organization_id=org, start=date(2026, 10, 1), end=date(2027, 1, 1))
    moves = [
        (r["customer_id"], str(r["movement"]), r["amount"])
        for r in analysis.movements.iter_rows(named=True)
    ]
    assert moves == [
        ("cus_u", "new", D("110.00")),
        ("cus_u", "expansion", D("220.00")),
        ("cus_t", "new", D("110.00")),
        ("cus_u", "churn", D("330.00")),  # canceled at the period end, Dec 1
    ]
    metrics = analysis.metrics
    assert metrics["end_mrr"].to_list() == [D("440.00"), D("440.00"), D("110.00")]

    with pytest.raises(BillingInputError, match="not a plan") as unknown:
        billing.change_plan(trial, "platinum")
    assert "pro" in str(unknown.value) and "team" in str(unknown.value)


def test_payments_are_idempotent_refunds_and_failures(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_p", "Payer", currency="EUR")
    sub = billing.subscribe(org, "cus_p", "team", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    failed: list[dict[str, Any]] = []
    billing.on("payment.failed", lambda _t, data: failed.append(data))

    declined = billing.pay(
        invoice.id, idempotency_key="try-1", provider=ManualProvider(fail_with="card declined")
    )
    assert declined["status"] == "failed"
    assert billing.subscription(sub)["status"] == "past_due"
    assert failed and failed[0]["reason"] == "card declined"

    first = billing.pay(invoice.id, idempotency_key="try-2")
    second = billing.pay(invoice.id, idempotency_key="try-2")
    assert first["id"] == second["id"]
    paid = billing.invoice(invoice.id)
    assert paid.status == "paid"
    assert paid.amount_paid == D("300.00")
    assert billing.subscription(sub)["status"] == "active"

    refund = billing.refund(first["id"], idempotency_key="r-1", amount=D(50))
    assert billing.refund(first["id"], idempotency_key="r-1", amount=D(50))["id"] == refund["id"]
    payments = billing.payments(invoice.id)
    assert payments["kind"].to_list() == ["payment", "payment", "refund"]
    billing.credit_note(invoice.id, D(20), "goodwill")
    with billing.engine.connect() as conn:
        balance = conn.execute(
            text(
                "SELECT credit_balance FROM dictamesh_billing_customers WHERE organization_id = :o"
            ),
            {"o": org},
        ).scalar_one()
    assert balance == D(20)


def test_stripe_webhook_signature_and_once_only(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_w", "Hook", currency="EUR")
    sub = billing.subscribe(org, "cus_w", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    secret = "whsec_test_secret"
    body = orjson.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_1",
                    "amount_received": 10000,
                    "metadata": {"invoice_id": str(invoice.id)},
                }
            },
        }
    )
    header = sign(body, secret)
    assert handle_stripe_webhook(billing, body, header, secret) == "applied"
    assert handle_stripe_webhook(billing, body, header, secret) == "duplicate"
    paid = billing.invoice(invoice.id)
    assert paid.status == "paid"
    assert paid.amount_paid == D("100.00")
    assert billing.payments(invoice.id).height == 1

    with pytest.raises(WebhookSignatureError, match="does not match") as wrong:
        handle_stripe_webhook(billing, body.replace(b"10000", b"99999"), header, secret)
    assert secret not in str(wrong.value)
    with pytest.raises(WebhookSignatureError, match="away from now"):
        handle_stripe_webhook(
            billing, body, sign(body, secret, timestamp=int(time.time()) - 3600), secret
        )
    with pytest.raises(WebhookSignatureError, match="no Stripe-Signature"):
        handle_stripe_webhook(billing, body, None, secret)


def test_events_go_through_the_outbox(billing: Billing, org: str, workbench: Any) -> None:
    from workbench.events.outbox import OutboxRelay

    billing.create_customer(org, "cus_e", "Events", currency="EUR")
    sub = billing.subscribe(org, "cus_e", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    billing.pay(invoice.id, idempotency_key="ev-1")
    with billing.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT topic, record_key FROM dictamesh_outbox WHERE record_key IN (:s, :i) ORDER "
                "BY id"
            ),
            {"s": str(sub).encode(), "i": str(invoice.id).encode()},
        ).all()
    topics = [r[0] for r in rows]
    assert topics == [SUBSCRIPTION_TOPIC, INVOICE_TOPIC, PAYMENT_TOPIC, INVOICE_TOPIC]
    relay = OutboxRelay(workbench.endpoints.kafka_bootstrap, workbench.endpoints.postgres_url)
    with psycopg.connect(workbench.endpoints.postgres_url, autocommit=True) as conn:
        while relay.relay_once(conn):
            pass
        pending = conn.execute(
            "SELECT count(*) FROM dictamesh_outbox WHERE published_at IS NULL AND topic LIKE "
            "'dictamesh.billing.%%'"
        ).fetchone()
    assert pending is not None and pending[0] == 0


def test_usage_meter_consumes_the_usage_topic_once(
    billing: Billing, org: str, workbench: Any
) -> None:
    from workbench.billing.meter import UsageMeter
    from workbench.events.consumer import ConsumerRunner, RunnerConfig
    from workbench.events.envelope import CloudEvent

    customer = billing.create_customer(org, "cus_m", "Metered", currency="EUR")
    at = (T0 + timedelta(days=2)).isoformat()
    payloads = [
        {
            "organization_id": org,
            "customer": "cus_m",
            "metric": "api_calls",
            "value": 5,
            "event_id": "m1",
            "occurred_at": at,
        },
        {
            "organization_id": org,
            "customer": "cus_m",
            "metric": "api_calls",
            "value": 5,
            "event_id": "m1",
            "occurred_at": at,
        },
        {
            "organization_id": org,
            "customer": "cus_m",
            "metric": "unknown",
            "value": 1,
            "event_id": "m2",
            "occurred_at": at,
        },
        {
            "organization_id": org,
            "customer": "cus_m",
            "metric": "api_calls",
            "value": -3,
            "event_id": "m3",
            "occurred_at": at,
        },
        {
            "organization_id": org,
            "customer": "cus_m",
            "metric": "api_calls",
            "value": 7,
            "event_id": "m4",
            "occurred_at": at,
        },
    ]
    handles = [
        workbench.producer.publish(
            USAGE_TOPIC,
            CloudEvent(source="/test/usage", type=USAGE_TOPIC, partitionkey="cus_m", data=p),
        )
        for p in payloads
    ]
    for handle in handles:
        handle.delivered()
    runner = ConsumerRunner(
        UsageMeter(group=f"billing-meter-{org}"),
        RunnerConfig(
            bootstrap=workbench.endpoints.kafka_bootstrap,
            postgres_url=workbench.endpoints.postgres_url,
        ),
    )

    def metered() -> bool:
        return billing.usage(customer, "api_calls", T0, T0 + timedelta(days=30)) == 12

    thread = threading.Thread(target=runner.run, kwargs={"until": metered}, daemon=True)
    thread.start()
    try:
        wait_for(metered, timeout=60)
    finally:
        runner.stop()
        thread.join(30)
    with billing.engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM dictamesh_billing_usage_events WHERE organization_id = :o"),
            {"o": org},
        ).scalar_one()
    assert count == 2  # m1 once, m4; the unknown metric and the negative value were rejected


def outbox_types(billing: Billing, key: object) -> list[str]:
    """The event types in the outbox for one record key, oldest first."""
    with billing.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT headers FROM dictamesh_outbox WHERE record_key = :k ORDER BY id"),
            {"k": str(key).encode()},
        ).scalars()
        types = [dict((name, value) for name, value in headers)["ce_type"] for headers in rows]
    return [t.removeprefix("dictamesh.billing.") for t in types]


def test_finalize_issues_a_draft_with_the_next_number(billing: Billing, org: str) -> None:
    cus = billing.create_customer(org, "cus_d", "Draft", currency="EUR", credit_balance=D(5))
    billing.create_customer(org, "cus_n", "Numbered", currency="EUR")
    billing.create_coupon(org, "ONCE", percent_off=D(50), duration="once")
    draft_sub = billing.subscribe(org, "cus_d", "pro", at=T0)
    billing.apply_coupon(draft_sub, "ONCE", at=T0)
    other = billing.subscribe(org, "cus_n", "team", at=T0)
    end = T0 + timedelta(days=31)
    first = billing.generate_invoices(org, subscription_ids=[other], at=end)[0]
    assert first.number == f"{org.upper()}-000001"
    issued: list[dict[str, Any]] = []
    billing.on("invoice.issued", lambda _t, data: issued.append(data))

    draft = billing.generate_invoices(org, subscription_ids=[draft_sub], finalize=False, at=end)[0]
    assert (draft.status, draft.number, draft.discount) == ("draft", None, D("50.00"))
    assert issued == []
    early = {"id": "pi_d", "amount_received": 4500, "metadata": {"invoice_id": str(draft.id)}}
    with pytest.raises(BillingInputError, match="takes no payments") as refused:
        _webhook(billing, "payment_intent.succeeded", early)
    assert "finalize_invoice" in str(refused.value)
    assert refused.value.field == "status" and refused.value.value == "draft"

    finalized = billing.finalize_invoice(draft.id, at=end + timedelta(hours=1))
    assert finalized.number == f"{org.upper()}-000002"
    assert finalized.status == "open"
    assert finalized.amount_due == draft.amount_due == D("45.00")  # 100 - 50 once - 5 credit
    row = billing.invoices(org, status="open").filter(pl_col_id(finalized.id))
    assert row["issued_at"][0] == end + timedelta(hours=1)
    assert [d["number"] for d in issued] == [finalized.number]
    assert outbox_types(billing, draft.id) == ["invoice.issued"]
    # the once discount and the credit were used up; the subscription moved past the period
    assert billing.discounts(cus)["times_applied"].to_list() == [1]
    assert billing.subscription(draft_sub)["current_period_start"] == end
    nxt = billing.generate_invoices(org, subscription_ids=[draft_sub], at=end + timedelta(days=30))
    assert (nxt[0].number, nxt[0].discount, nxt[0].credits_applied) == (
        f"{org.upper()}-000003",
        0,
        0,
    )
    with pytest.raises(BillingInputError, match="not a draft"):
        billing.finalize_invoice(draft.id)

    # transition(draft -> open) goes through the same path
    billing.create_customer(org, "cus_o", "Open", currency="EUR")
    third = billing.subscribe(org, "cus_o", "pro", at=T0)
    draft2 = billing.generate_invoices(org, subscription_ids=[third], finalize=False, at=end)[0]
    opened = billing.transition(draft2.id, "open", at=end)
    assert (opened.status, opened.number) == ("open", f"{org.upper()}-000004")
    assert issued[-1]["invoice_id"] == str(draft2.id)
    assert outbox_types(billing, draft2.id) == ["invoice.issued"]

    # a draft whose period was invoiced meanwhile is not issued: that would bill it twice
    billing.create_customer(org, "cus_t", "Twice", currency="EUR")
    fourth = billing.subscribe(org, "cus_t", "pro", at=T0)
    stale = billing.generate_invoices(org, subscription_ids=[fourth], finalize=False, at=end)[0]
    [issued_first] = billing.generate_invoices(org, subscription_ids=[fourth], at=end)
    with pytest.raises(
        BillingInputError, match=f"invoiced meanwhile by invoice {issued_first.number}"
    ):
        billing.finalize_invoice(stale.id)
    assert billing.invoice(stale.id).status == "draft"
    assert billing.transition(stale.id, "void").status == "void"


def pl_col_id(invoice_id: uuid.UUID) -> Any:
    import polars as pl

    return pl.col("id") == str(invoice_id)


def test_subscription_status_changes_go_through_the_outbox(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_tr", "Trial", currency="EUR")
    billing.create_customer(org, "cus_sc", "Scheduled", currency="EUR")
    billing.create_customer(org, "cus_fp", "Failing", currency="EUR")
    trial = billing.subscribe(org, "cus_tr", "pro", at=T0, trial_days=14)
    scheduled = billing.subscribe(org, "cus_sc", "pro", at=T0)
    failing = billing.subscribe(org, "cus_fp", "team", at=T0)
    seen: list[tuple[str, str]] = []
    for kind in ("activated", "canceled", "past_due", "recovered"):
        billing.on(
            f"subscription.{kind}", lambda t, data: seen.append((t, data["subscription_id"]))
        )

    billing.generate_invoices(org, subscription_ids=[trial], at=T0 + timedelta(days=14))
    assert billing.subscription(trial)["status"] == "active"
    billing.cancel(scheduled, at=T0 + timedelta(days=5), at_period_end=True)
    billing.generate_invoices(org, subscription_ids=[scheduled], at=T0 + timedelta(days=31))
    assert billing.subscription(scheduled)["status"] == "canceled"
    invoice = billing.generate_invoices(
        org, subscription_ids=[failing], at=T0 + timedelta(days=31)
    )[0]
    billing.pay(invoice.id, idempotency_key="fp-1", provider=ManualProvider(fail_with="declined"))
    billing.pay(invoice.id, idempotency_key="fp-2", provider=ManualProvider(fail_with="declined"))
    assert billing.subscription(failing)["status"] == "past_due"
    billing.pay(invoice.id, idempotency_key="fp-3")
    assert billing.subscription(failing)["status"] == "active"

    assert seen == [
        ("subscription.activated", str(trial)),
        ("subscription.canceled", str(scheduled)),
        ("subscription.past_due", str(failing)),  # once: the second failure changes nothing
        ("subscription.recovered", str(failing)),
    ]
    assert outbox_types(billing, trial) == ["subscription.created", "subscription.activated"]
    assert outbox_types(billing, scheduled) == [
        "subscription.created",
        "subscription.cancel_scheduled",
        "subscription.canceled",
    ]
    assert outbox_types(billing, failing) == [
        "subscription.created",
        "subscription.past_due",
        "subscription.recovered",
    ]


def test_trial_ending_is_notified_once(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_te", "Trial", currency="EUR")
    billing.create_customer(org, "cus_late", "Later", currency="EUR")
    soon = billing.subscribe(org, "cus_te", "pro", at=T0, trial_days=14)
    later = billing.subscribe(org, "cus_late", "pro", at=T0, trial_days=30)
    notified: list[str] = []
    billing.on(
        "subscription.trial_ending", lambda _t, data: notified.append(data["subscription_id"])
    )

    now = T0 + timedelta(days=12)
    assert billing.notify_trials_ending(at=now, organization_id=org) == [soon]
    assert billing.notify_trials_ending(at=now + timedelta(hours=1), organization_id=org) == []
    assert billing.trials_ending(org, now=now) == []
    assert notified == [str(soon)]
    assert outbox_types(billing, soon).count("subscription.trial_ending") == 1
    assert billing.subscription(soon)["trial_ending_notified_at"] == now
    # the other trial is notified when its own window comes
    assert billing.notify_trials_ending(
        at=T0 + timedelta(days=28), within=timedelta(days=3), organization_id=org
    ) == [later]
    assert notified == [str(soon), str(later)]
    with pytest.raises(BillingInputError, match="must be positive"):
        billing.notify_trials_ending(within=timedelta(0))


def _webhook(billing: Billing, event_type: str, obj: dict[str, Any]) -> str:
    secret = "whsec_test_secret"
    body = orjson.dumps(
        {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "data": {"object": obj}}
    )
    return handle_stripe_webhook(billing, body, sign(body, secret), secret)


def test_stripe_webhook_failed_payment_and_refund(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_wf", "Webhook", currency="EUR")
    sub = billing.subscribe(org, "cus_wf", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    failed: list[dict[str, Any]] = []
    billing.on("payment.failed", lambda _t, data: failed.append(data))
    meta = {"metadata": {"invoice_id": str(invoice.id)}}

    declined = {"id": "pi_f", "amount": 10000, "last_payment_error": {"message": "insufficient"}}
    assert _webhook(billing, "payment_intent.payment_failed", declined | meta) == "applied"
    assert billing.subscription(sub)["status"] == "past_due"
    assert [(f["invoice_id"], f["reason"]) for f in failed] == [(str(invoice.id), "insufficient")]
    assert billing.invoice(invoice.id).status == "open"

    paid = {"id": "pi_ok", "amount_received": 10000}
    assert _webhook(billing, "payment_intent.succeeded", paid | meta) == "applied"
    assert billing.subscription(sub)["status"] == "active"
    refund = {"id": "ch_1", "amount_refunded": 2550}
    assert _webhook(billing, "charge.refunded", refund | meta) == "applied"
    row = billing.invoices(org).filter(pl_col_id(invoice.id))
    assert row["amount_refunded"][0] == D("25.50")
    assert row["status"][0] == "paid"
    assert billing.payments(invoice.id)["kind"].to_list() == ["payment", "payment", "refund"]


def test_void_invoices_take_no_payments(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_v", "Void", currency="EUR")
    sub = billing.subscribe(org, "cus_v", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    billing.transition(invoice.id, "void")
    meta = {"metadata": {"invoice_id": str(invoice.id)}}
    with pytest.raises(BillingInputError, match="void and takes no payments") as refused:
        _webhook(
            billing, "payment_intent.succeeded", {"id": "pi_v", "amount_received": 10000} | meta
        )
    assert (refused.value.field, refused.value.value) == ("status", "void")
    assert "refund" in str(refused.value)
    voided = billing.invoice(invoice.id)
    assert (voided.status, voided.amount_paid) == ("void", 0)
    assert billing.payments(invoice.id).height == 0


def test_concurrent_payments_with_one_key_charge_once(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_cc", "Concurrent", currency="EUR")
    sub = billing.subscribe(org, "cus_cc", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    entered, release = threading.Event(), threading.Event()
    charges: list[str] = []

    class SlowProvider(ManualProvider):
        def charge(self, invoice: Any, amount: D, idempotency_key: str) -> Any:
            charges.append(idempotency_key)
            entered.set()
            release.wait(30)
            return super().charge(invoice, amount, idempotency_key)

    results: list[dict[str, Any]] = []

    def pay() -> None:
        results.append(billing.pay(invoice.id, idempotency_key="same", provider=SlowProvider()))

    first = threading.Thread(target=pay)
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=pay)
    second.start()

    def second_waits_for_the_lock() -> bool:
        with billing.engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%dictamesh_billing_invoices%FOR UPDATE%'"
                    )
                ).scalar_one()
            )

    wait_for(second_waits_for_the_lock)
    release.set()
    first.join(30)
    second.join(30)
    assert charges == ["same"]
    assert len(results) == 2 and results[0]["id"] == results[1]["id"]
    assert billing.payments(invoice.id).height == 1


def test_percentage_charge_bills_the_fee_per_transaction(billing: Billing, org: str) -> None:
    billing.create_metric(org, "payments", "sum")
    billing.create_plan(
        org,
        "payments",
        "Payments",
        amount=D(0),
        currency="EUR",
        charges=[
            PlanCharge(
                "payments",
                Charge("percentage", rate=D("0.029"), fixed_amount=D("0.30")),
                "Card payments",
            )
        ],
    )
    billing.create_customer(org, "cus_pc", "Percent", currency="EUR")
    billing.create_customer(org, "cus_pd", "Other", currency="EUR")
    sub = billing.subscribe(org, "cus_pc", "payments", at=T0)
    other = billing.subscribe(org, "cus_pd", "payments", at=T0)
    for i, value in enumerate(["400", "350.50", "249.50"]):
        billing.record_usage(
            org, f"pay{i}", "cus_pc", "payments", value, occurred_at=T0 + timedelta(days=i + 1)
        )
    billing.record_usage(org, "pay-other", "cus_pd", "payments", 100, occurred_at=T0)
    billing.record_usage(  # the next period: not on this invoice
        org, "pay-late", "cus_pc", "payments", 50, occurred_at=T0 + timedelta(days=40)
    )
    invoices = billing.generate_invoices(
        org, subscription_ids=[sub, other], at=T0 + timedelta(days=31)
    )
    by_sub = {inv.subscription_id: inv for inv in invoices}
    usage = [line for line in by_sub[sub].lines if line["kind"] == "usage"]
    # 2.9 % of 1000 + 3 transactions x 0.30
    assert [(line["quantity"], line["amount"]) for line in usage] == [(D("1000"), D("29.90"))]
    other_usage = [line for line in by_sub[other].lines if line["kind"] == "usage"]
    assert [line["amount"] for line in other_usage] == [D("3.20")]  # 2.90 + 1 x 0.30

    # nested in a flat_usage charge, the percentage gets the amount and the transactions too
    nested = Charge(
        "flat_usage",
        flat_amount=D(10),
        usage=Charge("percentage", rate=D("0.01"), fixed_amount=D("0.25")),
    )
    billing.create_plan(
        org,
        "gateway",
        "Gateway",
        amount=D(0),
        currency="EUR",
        charges=[PlanCharge("payments", nested, "Gateway")],
    )
    billing.create_customer(org, "cus_pg", "Gateway", currency="EUR")
    gateway = billing.subscribe(org, "cus_pg", "gateway", at=T0)
    for i in range(4):
        billing.record_usage(org, f"gw{i}", "cus_pg", "payments", 50, occurred_at=T0)
    invoice = billing.generate_invoices(
        org, subscription_ids=[gateway], at=T0 + timedelta(days=31)
    )[0]
    assert [line["amount"] for line in invoice.lines if line["kind"] == "usage"] == [
        D("13.00")  # 10 + 1 % of 200 + 4 x 0.25
    ]
