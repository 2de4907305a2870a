"""Subscription and invoice lifecycle on the real embedded stack: pause and resume, uncollectible
invoices, downgrades, plan versions, credit notes on open invoices."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.billing.conftest import new_organization
from workbench.billing.errors import BillingError
from workbench.billing.service import Billing, ManualProvider

pytestmark = pytest.mark.stack
D = Decimal
T0 = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def org(billing: Billing) -> str:
    return new_organization(billing, {"pro": 100, "team": 300})


def _events(billing: Billing) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    billing.on("*", lambda event_type, data: seen.append((event_type, data)))
    return seen


def test_pause_and_resume_churn_and_reactivate(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_p", "Paused", currency="EUR")
    sub = billing.subscribe(org, "cus_p", "pro", at=T0)
    seen = _events(billing)
    paused_at, resumed_at = T0 + timedelta(days=10), T0 + timedelta(days=40)

    billing.pause(sub, at=paused_at)
    assert billing.subscription(sub)["status"] == "paused"
    # the ten days served are invoiced at once: 10/31 of the month, to the second
    [served] = billing.invoices(org).filter(pl.col("customer") == "cus_p").to_dicts()
    assert (served["period_start"], served["period_end"]) == (T0, paused_at)
    assert served["amount_due"] == D("32.26")
    assert [(t, d.get("subscription_id")) for t, d in seen] == [
        ("invoice.issued", str(sub)),
        ("subscription.paused", str(sub)),
    ]
    with pytest.raises(BillingError, match="cannot mark it paused"):
        billing.pause(sub, at=paused_at)
    # no invoices while paused
    assert billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31)) == []

    billing.resume(sub, at=resumed_at)
    resumed = billing.subscription(sub)
    assert resumed["status"] == "active"
    assert (resumed["current_period_start"], resumed["current_period_end"]) == (
        resumed_at,
        datetime(2026, 12, 10, tzinfo=UTC),
    )
    with pytest.raises(BillingError, match="cannot resume it"):
        billing.resume(sub, at=resumed_at)
    assert [t for t, _ in seen if t.startswith("subscription.")] == [
        "subscription.paused",
        "subscription.resumed",
    ]

    history = billing.intervals(org)
    assert [(r["valid_from"], r["valid_to"]) for r in history.iter_rows(named=True)] == [
        (T0, paused_at),
        (resumed_at, None),
    ]
    # ChartMogul: a paused subscription brings no MRR; the pause is churn, the resumption a
    # reactivation (the customer paid before)
    analysis = billing.analysis(organization_id=org, start=date(2026, 10, 1), end=date(2027, 1, 1))
    moves = [
        (r["date"], str(r["movement"]), r["amount"])
        for r in analysis.movements.iter_rows(named=True)
    ]
    assert moves == [
        (T0, "new", D("110.00")),
        (paused_at, "churn", D("110.00")),
        (resumed_at, "reactivation", D("110.00")),
    ]
    assert analysis.metrics["end_mrr"].to_list() == [D("0.00"), D("110.00"), D("110.00")]

    # billing goes on from the resumption
    invoice = billing.generate_invoices(
        org, subscription_ids=[sub], at=datetime(2026, 12, 10, tzinfo=UTC)
    )[0]
    assert (invoice.period_start, invoice.amount_due) == (resumed_at, D("100.00"))


def test_canceling_now_invoices_the_time_served(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_c", "Canceled", currency="EUR")
    billing.create_customer(org, "cus_e", "Ends later", currency="EUR")
    now, later = (billing.subscribe(org, c, "pro", at=T0) for c in ("cus_c", "cus_e"))
    november = datetime(2026, 11, 1, tzinfo=UTC)
    billing.generate_invoices(org, subscription_ids=[now, later], at=november)
    seen = _events(billing)

    billing.cancel(now, at=datetime(2026, 11, 16, tzinfo=UTC))  # 15 of November's 30 days
    billing.cancel(later, at=datetime(2026, 11, 16, tzinfo=UTC), at_period_end=True)
    final = billing.invoices(org).filter(pl.col("period_start") == november).to_dicts()
    assert [(i["customer"], i["amount_due"]) for i in final] == [("cus_c", D("50.00"))]
    assert [t for t, _ in seen] == [
        "invoice.issued",
        "subscription.canceled",
        "subscription.cancel_scheduled",
    ]
    assert billing.generate_invoices(org, subscription_ids=[now], at=november) == []
    # the subscription canceled at period end is invoiced in full when its period ends
    [last] = billing.generate_invoices(
        org, subscription_ids=[later], at=datetime(2026, 12, 1, tzinfo=UTC)
    )
    assert last.amount_due == D("100.00")


def test_ending_a_subscription_scheduled_to_cancel(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_s", "Scheduled", currency="EUR")
    sub = billing.subscribe(org, "cus_s", "pro", at=T0)
    billing.cancel(sub, at=T0 + timedelta(days=1), at_period_end=True)
    with pytest.raises(BillingError, match="set to cancel at the end of its period"):
        billing.pause(sub, at=T0 + timedelta(days=5))
    seen = _events(billing)
    # canceled now, 75 days in and never invoiced: October, November, 14 of 31 December days
    billing.cancel(sub, at=T0 + timedelta(days=75))
    served = billing.invoices(org).filter(pl.col("customer") == "cus_s").sort("period_start")
    assert served["amount_due"].to_list() == [D("100.00"), D("100.00"), D("45.16")]
    assert [t for t, _ in seen] == ["invoice.issued"] * 3 + ["subscription.canceled"]
    ended = billing.subscription(sub)
    assert (ended["status"], ended["ended_at"]) == ("canceled", T0 + timedelta(days=75))


def test_uncollectible_invoice_can_still_be_paid_or_voided(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_u", "Uncollectible", currency="EUR")
    billing.create_customer(org, "cus_v", "Voided", currency="EUR")
    first = billing.subscribe(org, "cus_u", "pro", at=T0)
    second = billing.subscribe(org, "cus_v", "pro", at=T0)
    invoices = billing.generate_invoices(
        org, subscription_ids=[first, second], at=T0 + timedelta(days=31)
    )
    by_sub = {inv.subscription_id: inv for inv in invoices}
    seen = _events(billing)

    bad = billing.transition(by_sub[first].id, "uncollectible")
    assert bad.status == "uncollectible"
    assert ("invoice.uncollectible", str(bad.id)) in [(t, d["invoice_id"]) for t, d in seen]
    with pytest.raises(BillingError, match="cannot become open"):
        billing.transition(bad.id, "open")
    billing.pay(bad.id, idempotency_key="late-payment")
    paid = billing.invoice(bad.id)
    assert (paid.status, paid.amount_paid) == ("paid", D("100.00"))

    other = billing.transition(by_sub[second].id, "uncollectible")
    assert billing.transition(other.id, "void").status == "void"
    with pytest.raises(BillingError, match="cannot be paid"):
        billing.pay(other.id, idempotency_key="too-late")


def test_downgrade_credits_the_unused_time(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_d", "Downgrade", currency="EUR")
    sub = billing.subscribe(org, "cus_d", "team", at=T0)
    seen = _events(billing)
    # after 10 of 31 days: credit 21/31 of 300, charge 21/31 of 100
    lines = billing.change_plan(sub, "pro", at=T0 + timedelta(days=10))
    assert lines == {"credit": D("-203.23"), "charge": D("67.74")}
    assert lines["credit"] + lines["charge"] < 0
    assert [(t, d["from"], d["to"]) for t, d in seen] == [
        ("subscription.downgraded", "team", "pro")
    ]

    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    # the period is billed at the plan it started on, and the proration lines move it to the
    # new plan from the change on: 10 days of Team and 21 of Pro
    assert [(line["kind"], line["description"], line["amount"]) for line in invoice.lines] == [
        ("subscription", "Team (monthly)", D("300.00")),
        ("proration", "Unused time on Team", D("-203.23")),
        ("proration", "Remaining time on Pro", D("67.74")),
    ]
    assert invoice.amount_due == D("300.00") - D("203.23") + D("67.74")
    # the next period is Pro's alone
    [nxt] = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=61))
    assert [(line["kind"], line["amount"]) for line in nxt.lines] == [("subscription", D("100"))]
    assert billing.subscription(sub)["pending_items"] == []


def test_plan_versions_keep_existing_prices(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_old", "Old", currency="EUR")
    billing.create_customer(org, "cus_new", "New", currency="EUR")
    old = billing.subscribe(org, "cus_old", "pro", at=T0)
    assert billing.create_plan(org, "pro", "Pro 2027", amount=D(120), currency="EUR") == 2
    new = billing.subscribe(org, "cus_new", "pro", at=T0)
    invoices = billing.generate_invoices(
        org, subscription_ids=[old, new], at=T0 + timedelta(days=31)
    )
    by_sub = {inv.subscription_id: inv for inv in invoices}
    assert by_sub[old].subtotal == D("100.00")  # version 1
    assert by_sub[new].subtotal == D("120.00")  # version 2
    with billing.engine.connect() as conn:
        from sqlalchemy import text

        versions = dict(
            conn.execute(
                text(
                    "SELECT s.id, p.version FROM dictamesh_billing_subscriptions s JOIN "
                    "dictamesh_billing_plans p ON p.id = s.plan_id WHERE s.id IN (:a, :b)"
                ),
                {"a": old, "b": new},
            ).all()
        )
    assert versions == {old: 1, new: 2}
    amounts = {
        r["subscription_id"]: r["amount"] for r in billing.intervals(org).iter_rows(named=True)
    }
    assert amounts == {str(old): 100.0, str(new): 120.0}


def test_credit_note_on_an_open_invoice(billing: Billing, org: str) -> None:
    billing.create_customer(org, "cus_c", "Credited", currency="EUR")
    sub = billing.subscribe(org, "cus_c", "pro", at=T0)
    invoice = billing.generate_invoices(org, subscription_ids=[sub], at=T0 + timedelta(days=31))[0]
    billing.pay(invoice.id, idempotency_key="decline", provider=ManualProvider(fail_with="no"))
    assert billing.subscription(sub)["status"] == "past_due"
    seen = _events(billing)

    billing.credit_note(invoice.id, D(30), "outage")
    reduced = billing.invoice(invoice.id)
    assert (reduced.status, reduced.amount_due) == ("open", D("70.00"))
    billing.pay(invoice.id, idempotency_key="part", amount=D(20))
    assert billing.invoice(invoice.id).status == "open"

    # the rest is credited: nothing left to pay, so the invoice is paid
    billing.credit_note(invoice.id, D(50), "apology")
    settled = billing.invoice(invoice.id)
    assert (settled.status, settled.amount_due, settled.amount_paid) == (
        "paid",
        D("20.00"),
        D("20.00"),
    )
    assert billing.subscription(sub)["status"] == "active"
    assert [t for t, _ in seen if t.startswith(("invoice.", "subscription."))] == [
        "invoice.credit_note",
        "invoice.credit_note",
        "invoice.paid",
        "subscription.recovered",
    ]
    listing = billing.invoices(org)
    assert listing["paid_at"][0] is not None
    with pytest.raises(BillingError, match="cannot be paid"):
        billing.pay(invoice.id, idempotency_key="after")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    old=st.integers(1, 1000),
    new=st.integers(1, 1000),
    changed_after=st.integers(1, 31 * 86400 - 2),
    cut=st.one_of(st.none(), st.integers(1, 31 * 86400 - 1)),
)
def test_a_period_with_a_plan_change_bills_each_plan_for_the_time_it_was_held(
    billing: Billing, old: int, new: int, changed_after: int, cut: int | None
) -> None:
    """Invoiced when the period ends (or when a pause cuts it), a period bills the old price for
    the time before the change and the new one after it, to the second; each line is rounded on
    its own, so the total is within three half-cents."""
    org = new_organization(billing, {"old": old, "new": new})
    billing.create_customer(org, "cus_h", "Held", currency="EUR")
    sub = billing.subscribe(org, "cus_h", "old", at=T0)
    changed_at = T0 + timedelta(seconds=changed_after)
    billing.change_plan(sub, "new", at=changed_at)
    month = 31 * 86400
    end = month if cut is None or cut <= changed_after else cut
    if end < month:
        billing.pause(sub, at=T0 + timedelta(seconds=end))
        [invoice] = billing.invoices(org).to_dicts()
        total = invoice["total"]
    else:
        [issued] = billing.generate_invoices(
            org, subscription_ids=[sub], at=T0 + timedelta(days=31)
        )
        total = issued.total
    held = (D(old) * changed_after + D(new) * (end - changed_after)) / month
    assert abs(total - held) <= D("0.015")
